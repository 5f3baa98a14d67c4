"""`python -m ferkit ...` is the `ferkit` command (handy under `torchrun -m ferkit train ...`)."""

from ferkit.apps.cli import main

if __name__ == "__main__":
    main()

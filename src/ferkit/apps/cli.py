"""The `ferkit` command line. Each group of commands lives in its own module and registers here.

Heavy imports (torch, the web stack) happen inside the commands, so `ferkit --help` and the
run-time commands never load torch.
"""

from __future__ import annotations

import typer

from ferkit.apps import cli_data, cli_eval, cli_runtime, cli_serve, cli_train

app = typer.Typer(
    name="ferkit",
    help="Facial expression recognition: explore data, train, evaluate, and recognise expressions in images, video and webcams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (cli_data, cli_train, cli_eval, cli_runtime, cli_serve):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

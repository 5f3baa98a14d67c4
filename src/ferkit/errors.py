"""One exception hierarchy for everything a user can get wrong.

Every error ferkit raises on purpose (a bad file, a bad option, a missing extra) is a `FerkitError`.
The CLI and the web layer catch these and only these: they print one line (exit 2) or answer 4xx.
Anything else is a bug and shows as one.

Children also derive from `ValueError` where they used to be one, so code that caught `ValueError`
keeps working.
"""

from __future__ import annotations


class FerkitError(Exception):
    """Base of every error ferkit raises on purpose; the message is one line a user can act on."""

    exit_code = 2


class UsageError(FerkitError, ValueError):
    """An option or argument has a value ferkit cannot use (the message names the option)."""


class ConfigError(UsageError):
    """A training configuration (file or options) is invalid."""


class DataError(FerkitError, ValueError):
    """Bad input data; the message names the file and the row or file at fault."""


class ImageError(FerkitError, ValueError):
    """An input image could not be used; the message names the file and the reason."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed (a decompression-bomb guard)."""


class VideoError(FerkitError, ValueError):
    """A video could not be read or written; the message names the file."""


class ModelError(FerkitError, ValueError):
    """A model file or card is missing or does not follow the ferkit model contract."""


class DetectorError(FerkitError, ValueError):
    """A detector cannot be used (unknown name, model file missing)."""


class DisplayError(FerkitError, ValueError):
    """No window can be shown here."""


class RunError(FerkitError, ValueError):
    """A training run folder is missing, incomplete or does not match what was asked of it."""


class OutputError(FerkitError, OSError):
    """An output file or folder could not be written (read-only, full disk, ...); the message names it."""


class MissingExtraError(FerkitError, ImportError):
    """A command needs an optional extra that is not installed; the message names the pip command."""

    def __init__(self, extra: str, what: str, module: str = ""):
        self.extra, self.module = extra, module
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'ferkit[{extra}]'"
                         + (f" (missing module: {module})" if module else ""))


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Raise MissingExtraError before any work when one of `modules` cannot be imported."""
    import importlib.util

    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(extra, what, name)


__all__ = [
    "ConfigError", "DataError", "DetectorError", "DisplayError", "FerkitError", "ImageError", "ImageTooLargeError",
    "MissingExtraError", "ModelError", "OutputError", "RunError", "UsageError", "VideoError", "require_extra",
]

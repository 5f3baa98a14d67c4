"""The CLI's error boundary: a user's mistake is one line and exit 2; a bug is a traceback and a plea.

Only `ferkit.errors.FerkitError` (and the operating system's own file errors, which name their file)
count as the user's doing. Anything else is a bug in ferkit and is shown as one.
"""

from __future__ import annotations

import errno
import functools
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer

from ferkit.errors import FerkitError

F = TypeVar("F", bound=Callable)

REPORT = "this is a bug in ferkit; please report it with the command you ran and the traceback above"
# File-system faults a user can fix: a missing path, no permission, a full or read-only disk.
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC,
                errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST}


def user_message(exc: BaseException) -> str | None:
    """The one line to show for an error the user caused, or None if it is a bug."""
    if isinstance(exc, FerkitError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        return f"{where}: {reason}" if where else reason
    return None


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Decorator for CLI commands: FerkitError and file-system errors print 'error: …' and exit 2;
    any other exception prints its traceback and a line asking for a bug report (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 -- the boundary: sort the user's faults from bugs
            message = user_message(exc)
            if message is not None:
                raise fail(message, getattr(exc, "exit_code", 2)) from None
            traceback.print_exc(file=sys.stderr)
            typer.secho(REPORT, err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]

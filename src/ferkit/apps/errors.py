"""Turn the errors users cause (bad files, bad options) into one clear line and exit status 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer

F = TypeVar("F", bound=Callable)


def user_errors(fn: F) -> F:
    """Decorator for CLI commands: ValueError/OSError subclasses from our readers print 'error: …' and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]

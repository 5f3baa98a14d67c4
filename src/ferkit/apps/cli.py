"""The `ferkit` command line. Each group of commands lives in its own module and registers here.

Heavy imports (torch, the web stack) happen inside the commands, so `ferkit --help` and the
run-time commands never load torch.

`--help` lists the commands in two panels: recognising expressions (photos, video, webcam, the web
server) first, then data, training and evaluation. Usage lines name arguments plainly
(`ferkit predict [OPTIONS] INPUTS...`) and flags show no type.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperArgument, TyperGroup

from ferkit import __version__
from ferkit.apps import cli_analyze, cli_data, cli_eval, cli_quantize, cli_runtime, cli_serve, cli_train

RUN_PANEL = "Recognise expressions"
DEV_PANEL = "Data, training and evaluation"
RUN_COMMANDS = ("predict", "demo", "video", "webcam", "serve", "chart")


class _PlainArgument(TyperArgument):
    """An argument shown as click shows it: `INPUTS...` in the usage line, no type column."""

    @property
    def display_name_raw(self) -> str:  # the help row and error messages: 'INPUTS'
        return (self.metavar or self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx):  # the help text says what the argument is
        return None


def _tidy(command, ctx: typer.Context) -> None:
    for param in command.params:
        if isinstance(param, TyperArgument) and type(param) is TyperArgument:
            param.__class__ = _PlainArgument
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no `<bool>` column
    help_opt = command.get_help_option(ctx)  # made (and kept) with the names this context allows: -h, --help
    if help_opt is not None and help_opt.metavar is None:
        help_opt.metavar = ""
    for name, sub in getattr(command, "commands", {}).items():
        _tidy(sub, typer.Context(sub, parent=ctx, info_name=name, **(sub.context_settings or {})))


class _Group(TyperGroup):
    """The top-level group: run-time commands first, each panel titled; every command's help tidied."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        run = [n for n in RUN_COMMANDS if n in self.commands]
        self.commands = {n: self.commands[n] for n in run + [n for n in self.commands if n not in run]}
        for name, cmd in self.commands.items():
            if not isinstance(getattr(cmd, "rich_help_panel", None), str):  # unset (typer keeps a placeholder)
                cmd.rich_help_panel = RUN_PANEL if name in RUN_COMMANDS else DEV_PANEL
        _tidy(self, typer.Context(self, info_name="ferkit", **(self.context_settings or {})))


app = typer.Typer(
    name="ferkit",
    cls=_Group,
    help="Facial expression recognition: recognise expressions in photos, video and webcams, and explore data, "
         "train and evaluate models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"ferkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", "-V", callback=_show_version, is_eager=True, help="Print ferkit's version and exit.")] = None,
) -> None:
    """Facial expression recognition: recognise expressions in photos, video and webcams, and explore data,
    train and evaluate models."""


for module in (cli_runtime, cli_serve, cli_analyze, cli_data, cli_train, cli_eval, cli_quantize):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

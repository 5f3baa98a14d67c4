"""`ferkit train` and `ferkit models`. The options of `train` are not written here: they are built from the
fields of `ferkit.train.config.TrainConfig` (default, help text, flag), plus `--config` and `--resume`.
Torch is imported only when a command runs."""

from __future__ import annotations

import inspect
import os
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from ferkit.apps.errors import user_errors
from ferkit.errors import ConfigError, require_extra
from ferkit.train.config import TrainConfig, default_of, field_types, flag_of, load_recipe, resume_config
from ferkit.train.run import RunFolder

CLI_ONLY = {
    "resume": (bool, False, "Continue the run in --out from its last checkpoint (a folder with no run yet starts "
                            "one). Settings given with it must match the run's, except those a run may change "
                            "midway (--epochs with a plateau or no schedule, --early-stop, --threads, --device, "
                            "--precision, a moved DATA)."),
    "config": (Optional[Path], None, "A recipe: a JSON (or TOML) object of these settings, e.g. configs/joint.json "
                                     "or a run's config.json. Options given here override it."),
}


# ---------------------------------------------------------------------------- the options, from TrainConfig
def _cli_type(hint, kind: str | None):
    optional = type(None) in typing.get_args(hint)
    if kind == "path":
        return Optional[Path] if optional else Path
    if kind == "paths":
        return Optional[list[Path]]
    if kind == "classes":
        return Optional[str]
    if optional:
        return Optional[next(a for a in typing.get_args(hint) if a is not type(None))]
    return hint


def _parameters() -> list[inspect.Parameter]:
    hints = field_types()
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        kind = meta["kind"]
        if f.name == "data":
            params.append(inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Annotated[Path, typer.Argument(help=meta["help"])]))
            continue
        decls = [flag_of(f.name)] + ([meta["short"]] if meta["short"] else [])
        default = default_of(f.name)
        if kind == "paths":
            default = None
        elif kind == "path" and default is not None:
            default = Path(default)
        elif kind == "classes" and default is not None:
            default = ",".join(default)
        info = typer.Option(*decls, help=meta["help"]) if meta["flag"] or meta["short"] else typer.Option(help=meta["help"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[_cli_type(hints[f.name], kind), info]))
    for name, (hint, default, help_text) in CLI_ONLY.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[hint, typer.Option(help=help_text)]))
    return params


def _field_value(name: str, value):
    """A command-line value as the TrainConfig field holds it (paths as strings, classes as a list)."""
    from ferkit.classes import parse_class_list

    kind = next(f.metadata["kind"] for f in fields(TrainConfig) if f.name == name)
    if kind == "path":
        return None if value is None else str(value)
    if kind == "paths":
        return [str(v) for v in value or []]
    if kind == "classes":
        try:
            names = parse_class_list(value)
        except ValueError as exc:
            raise ConfigError(f"--classes {value!r}: {exc}") from None
        return list(names) if names else None
    return value


def given_options(ctx: typer.Context, options: dict) -> dict:
    """The TrainConfig settings the command line gave (options left at their defaults are not given)."""
    given = {}
    for name, value in options.items():
        source = ctx.get_parameter_source(name)  # an enum of typer's own click: compared by name
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given[name] = _field_value(name, value)
    return given


# ---------------------------------------------------------------------------- the commands
@dataclass
class Plan:
    """What `ferkit train` will do: the config, whether it resumes, and what the run folder keeps of the asking."""

    cfg: TrainConfig
    resume: bool
    recipe: dict | None  # {"file": the --config path, "settings": its contents}
    changes: list[str]  # settings a resume changes (e.g. more epochs)


def plan_run(ctx: typer.Context) -> Plan:
    """The TrainConfig a `ferkit train` command line asks for: the --config recipe, overridden by the options
    given; with --resume and a run in the -o folder, that run's own config, with the given settings that
    may change midway applied and any other difference refused (ConfigError naming them)."""
    options = dict(ctx.params)
    resume, config = options.pop("resume"), options.pop("config")
    recipe = load_recipe(config) if config is not None else {}
    requested = {**recipe, **given_options(ctx, options)}
    out = requested.get("out") or default_of("out")
    run = RunFolder(out)
    changes: list[str] = []
    if resume and run.config.is_file():  # resume in this folder, wherever it was when the run started
        cfg, changes = resume_config(run.load_config(), requested, out)
    else:
        cfg = TrainConfig.from_dict(requested, source="options")
    return Plan(cfg.validate(), resume, {"file": str(config), "settings": recipe} if config is not None else None,
                changes)


@user_errors
def train(ctx: typer.Context, **options) -> None:
    require_extra("train", "ferkit train", "torch", "safetensors")
    plan = plan_run(ctx)
    first = os.environ.get("RANK", "0") == "0"  # under torchrun, process 0 alone speaks
    for change in plan.changes if first else ():
        typer.echo(f"resuming with {change}", err=True)
    from ferkit.train.loop import train as run_training

    state = run_training(plan.cfg, resume=plan.resume, argv=["ferkit", *sys.argv[1:]], recipe=plan.recipe,
                         changes=plan.changes)
    if first:
        typer.echo(f"best {plan.cfg.val_split} accuracy {state['best_acc']:.4f} at epoch {state['best_epoch']}; "
                   f"weights in {RunFolder(plan.cfg.out).best}")


train.__doc__ = "Train a model. Defaults are the FER tutorials' recipe: Adam 5e-4, batch 64, 15 epochs, plateau LR."
train.__signature__ = inspect.Signature(_parameters())  # what typer reads to build the options
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}


@user_errors
def models() -> None:
    """List the registered architectures with their parameter counts (7 classes)."""
    require_extra("train", "ferkit models", "torch")
    from ferkit.models import count_parameters, create_model, list_models

    for name in list_models():
        typer.echo(f"{name:16s} {count_parameters(create_model(name, 7)):>12,d} parameters")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(models)

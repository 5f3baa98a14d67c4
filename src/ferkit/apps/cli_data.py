"""`ferkit explore` and `ferkit data …`: look at a data set and convert between layouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ferkit.apps.errors import user_errors
from ferkit.classes import parse_class_list
from ferkit.errors import OutputError, UsageError

console = Console()

DataArg = Annotated[Path, typer.Argument(help="FER2013 CSV (.csv or .csv.gz), a folder tree, or a folder holding fer2013.csv[.gz].")]
ClassesOpt = Annotated[Optional[str], typer.Option("--classes", help="Keep only these classes, e.g. happy,sad,neutral,surprise.")]
FerplusOpt = Annotated[Optional[Path], typer.Option("--ferplus", help="FER+ votes file (fer2013new.csv): relabel by majority vote, 8 classes.")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad-rows", help="Skip malformed CSV rows and count them instead of stopping at the first.")]


def load(data: Path, classes: str | None, ferplus: Path | None, skip_bad_rows: bool):
    from ferkit.data import load_dataset

    faces = load_dataset(
        data, ferplus=ferplus, classes=parse_class_list(classes), on_error="skip" if skip_bad_rows else "raise"
    )
    rep = faces.report
    if rep.skipped or rep.dropped or rep.unknown_folders:  # one line each, never wrapped: names stay greppable
        console.print(f"[yellow]{escape(str(data))}: {rep.summary()}[/yellow]", soft_wrap=True)
        for where, why in rep.skipped[:20]:
            console.print(escape(f"  skipped {where}: {why}"), soft_wrap=True, highlight=False)
        if len(rep.skipped) > 20:
            console.print(f"  … and {len(rep.skipped) - 20} more", soft_wrap=True)
        for folder in rep.unknown_folders:
            console.print(escape(f"  unknown folder ignored: {folder}"), soft_wrap=True, highlight=False)
    return faces


def counts_table(faces, title: str) -> Table:
    counts = faces.counts()
    table = Table(title=title)
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right")
    for i, name in enumerate(faces.class_names):
        table.add_row(name, *(str(counts[s][i]) for s in counts))
    table.add_row("total", *(str(sum(counts[s])) for s in counts), style="bold")
    return table


@user_errors
def explore(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs.")] = Path("explore"),
    per_class: Annotated[int, typer.Option(min=1, help="Faces shown per class in the grid.")] = 8,
    classes: ClassesOpt = None,
    ferplus: FerplusOpt = None,
    skip_bad_rows: SkipOpt = False,
    seed: Annotated[int, typer.Option(help="Seed for choosing the faces shown.")] = 0,
) -> None:
    """Show a data set: a grid of faces per class, class balance per split, and the counts table."""
    from ferkit.data.explore import balance_chart, face_grid
    from ferkit.fileio import ensure_dir

    check_writable(out)
    faces = load(data, classes, ferplus, skip_bad_rows)
    ensure_dir(out)
    grid = face_grid(faces, out / "faces_grid.png", per_class=per_class, seed=seed)
    chart = balance_chart(faces, out / "class_balance.png")
    console.print(counts_table(faces, f"{data} — {len(faces):,} faces"))
    console.print(f"wrote {grid}\nwrote {chart}")


@user_errors
def convert(
    src: Annotated[Path, typer.Argument(help="Source: FER2013 CSV or folder tree.")],
    dst: Annotated[Path, typer.Argument(help="Destination: a folder (writes a PNG tree) or a .csv/.csv.gz file.")],
    classes: ClassesOpt = None,
    skip_bad_rows: SkipOpt = False,
    force: Annotated[bool, typer.Option(help="Write into a non-empty destination folder / over an existing file.")] = False,
) -> None:
    """Convert between layouts: CSV -> folder tree of PNGs, or folder tree -> Kaggle-format CSV.

    The output is complete or absent: a CSV is written to a temporary file and renamed at the end, a new
    tree is built beside its folder and renamed into place; a failure (full disk, read-only folder) stops
    with one line and leaves nothing half-written.
    """
    from ferkit.data import write_fer2013, write_folder_tree
    from ferkit.fileio import ensure_dir

    to_csv = dst.name.endswith((".csv", ".csv.gz"))
    if dst.is_dir() and to_csv:
        raise OutputError(f"{dst}: is a folder; a CSV destination must be a file")
    if dst.exists() and not dst.is_dir() and not to_csv:
        raise OutputError(f"{dst}: is a file, not a folder (a CSV destination must end in .csv or .csv.gz)")
    if dst.exists() and not force and (to_csv or any(dst.iterdir())):
        raise UsageError(f"{dst}: already exists and is not empty; pass --force to write anyway")
    check_writable(dst.parent if to_csv else dst)
    faces = load(src, classes, None, skip_bad_rows)
    if to_csv:
        ensure_dir(dst.parent)
        write_fer2013(faces, dst)
    else:
        write_folder_tree(faces, dst)
    console.print(counts_table(faces, f"wrote {len(faces):,} faces to {dst}"))


def check_writable(folder: Path) -> None:
    """Refuse, before any slow loading, an output folder that cannot be created or written.

    Looks at the folder, or at its nearest existing parent when it does not exist yet; creates nothing.
    """
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"cannot use {folder} as an output folder: {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" (in {probe})"
        raise OutputError(f"cannot write to output folder {folder}: permission denied{where}")


def register(app: typer.Typer) -> None:
    app.command()(explore)
    data_app = typer.Typer(help="Data set tools.", no_args_is_help=True)
    data_app.command()(convert)

    @data_app.command()
    @user_errors
    def info(data: DataArg, classes: ClassesOpt = None, ferplus: FerplusOpt = None, skip_bad_rows: SkipOpt = False) -> None:
        """Print the class counts per split."""
        faces = load(data, classes, ferplus, skip_bad_rows)
        console.print(counts_table(faces, f"{data} — {len(faces):,} faces"))

    app.add_typer(data_app, name="data")

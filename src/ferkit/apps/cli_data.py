"""`ferkit explore` and `ferkit data …`: look at a data set and convert between layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ferkit.apps.errors import user_errors
from ferkit.classes import parse_class_list

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
    if rep.skipped or rep.dropped or rep.unknown_folders:
        console.print(f"[yellow]{data}: {rep.summary()}[/yellow]")
        for where, why in rep.skipped[:20]:
            console.print(f"  skipped {where}: {why}")
        if len(rep.skipped) > 20:
            console.print(f"  … and {len(rep.skipped) - 20} more")
        for folder in rep.unknown_folders:
            console.print(f"  unknown folder ignored: {folder}")
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
    per_class: Annotated[int, typer.Option(help="Faces shown per class in the grid.")] = 8,
    classes: ClassesOpt = None,
    ferplus: FerplusOpt = None,
    skip_bad_rows: SkipOpt = False,
    seed: Annotated[int, typer.Option(help="Seed for choosing the faces shown.")] = 0,
) -> None:
    """Show a data set: a grid of faces per class, class balance per split, and the counts table."""
    from ferkit.data.explore import balance_chart, face_grid

    faces = load(data, classes, ferplus, skip_bad_rows)
    out.mkdir(parents=True, exist_ok=True)
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
    """Convert between layouts: CSV -> folder tree of PNGs, or folder tree -> Kaggle-format CSV."""
    from ferkit.data import write_fer2013, write_folder_tree

    to_csv = dst.name.endswith((".csv", ".csv.gz"))
    if dst.exists() and not force and (to_csv or any(dst.iterdir())):
        raise ValueError(f"{dst}: already exists and is not empty; pass --force to write anyway")
    faces = load(src, classes, None, skip_bad_rows)
    if to_csv:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_fer2013(faces, dst)
    else:
        write_folder_tree(faces, dst)
    console.print(counts_table(faces, f"wrote {len(faces):,} faces to {dst}"))


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

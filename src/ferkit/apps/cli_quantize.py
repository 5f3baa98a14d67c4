"""`ferkit quantize`: an int8 version of an ONNX model, checked against it and recorded on its card.

Needs the `train` extra (onnx, for onnxruntime's quantisation tools); the int8 file it writes is run by
the plain run-time install.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ferkit.apps.errors import user_errors
from ferkit.errors import UsageError, require_extra

O = typer.Option
console = Console()
METHODS = ("minmax", "entropy", "percentile")  # ferkit.train.quantize.METHODS (not imported: --help stays light)


@user_errors
def quantize(
    model: Annotated[str, typer.Argument(help="An .onnx model with its card .json beside it, or a shipped model's "
                                              "name. The int8 file is written beside it (NAME.int8.onnx) and "
                                              "recorded in its card, if it passes the checks.")],
    data: Annotated[Path, typer.Argument(help="FER2013 CSV or the folder holding fer2013.csv[.gz]: Training faces "
                                              "calibrate, PublicTest chooses the method, PrivateTest checks.")],
    ferplus: Annotated[Optional[Path], O(help="FER+ votes file (fer2013new.csv): score against the FER+ majority "
                                              "vote (8-class models).")] = None,
    method: Annotated[Optional[list[str]], O(help="Calibration method to try (repeat for more): minmax, entropy, "
                                                  "percentile. Default: all three; the one whose argmax agrees "
                                                  "with fp32 most often on PublicTest is kept.")] = None,
    calibration: Annotated[int, O(help="Training faces the activation ranges are calibrated on.")] = 1000,
    seed: Annotated[int, O(help="Which Training faces calibrate (a random draw by this seed).")] = 0,
    tta: Annotated[Optional[str], O(help="TTA of the PrivateTest check: none | flip | crops | multi. Default: the "
                                         "card's (what the run time does).")] = None,
    choice_tta: Annotated[str, O(help="TTA of the PublicTest comparison of methods.")] = "none",
    every: Annotated[Optional[int], O(help="Score every Nth face of PublicTest and PrivateTest only (a quicker, "
                                           "rougher check; the card records N).")] = None,
    max_drop: Annotated[float, O(help="Keep the int8 file only if its PrivateTest accuracy is at most this much "
                                      "below fp32's (a fraction: 0.003 = 0.3 points).")] = 0.003,
    min_agreement: Annotated[float, O(help="... and its argmax agrees with fp32's on at least this fraction of "
                                           "the faces.")] = 0.98,
    threads: Annotated[Optional[int], O(help="CPU threads for the models.")] = None,
    as_json: Annotated[bool, O("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on Training faces, kept where it matches fp32."""
    require_extra("train", "ferkit quantize", "onnx")
    require_extra("eval", "ferkit quantize", "sklearn")
    from ferkit.train.quantize import quantize_model

    for m in method or ():
        if m not in METHODS:
            raise UsageError(f"--method {m!r}: choose one of {', '.join(METHODS)}")
    if calibration < 1:
        raise UsageError(f"--calibration {calibration}: must be at least 1 face")
    if every is not None and every < 1:
        raise UsageError(f"--every {every}: must be at least 1")
    r = quantize_model(model, data, ferplus=ferplus, methods=tuple(method or METHODS), calibration=calibration,
                       seed=seed, tta=tta, every=every, choice_tta=choice_tta, max_drop=max_drop,
                       min_agreement=min_agreement, threads=threads, progress=not as_json,
                       command=shlex.join(["ferkit", *sys.argv[1:]]))
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    rec, chk = r["record"], r["record"]["PrivateTest"]
    console.print(f"calibrated on {rec['calibration']['faces']} Training faces; chosen on PublicTest "
                  f"(TTA {choice_tta}): {r['chosen']}", highlight=False)
    for name, fig in r["candidates"].items():
        console.print(f"  {name}: argmax agreement {fig['argmax_agreement']:.4f}, accuracy {fig['accuracy']:.4f} "
                      f"(fp32 {fig['accuracy_fp32']:.4f}, {fig['faces']:,} faces)", highlight=False)
    console.print(f"PrivateTest (TTA {chk['tta']}, {chk['faces']:,} faces): accuracy {chk['accuracy']:.4f} int8 vs "
                  f"{chk['accuracy_fp32']:.4f} fp32, argmax agreement {chk['argmax_agreement']:.4f}; "
                  f"{rec['size_bytes'] / 2**20:.1f} MiB", highlight=False)
    if r["kept"]:
        console.print(f"[bold]kept[/bold]: wrote {r['file']} and its record in {r['card']}", highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"[yellow]not kept[/yellow] (limits: accuracy drop <= {max_drop}, agreement >= "
                      f"{min_agreement}, under 20 MB): nothing written", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(quantize)

"""`ferkit analyze SOURCES... -o RESULTS` (batch analysis into Parquet) and `ferkit report RESULTS -o DIR`.

Run-time only: numpy, OpenCV, onnxruntime, pyarrow (pandas and matplotlib for the report) — never torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ferkit.apps.cli_runtime import DetectorOpt, MinScoreOpt, ModelOpt, TtaOpt
from ferkit.apps.errors import fail, user_errors

SHOWN_FAILURES = 20


@user_errors
def analyze(
    sources: Annotated[list[str], typer.Argument(
        metavar="SOURCES", show_default=False,
        help="Image and video files, folders (searched recursively), patterns ('clips/**/*.mp4', quoted), "
             "and lists of paths: @LIST, or any .txt/.csv file, one path a line (a CSV's first column; "
             "relative paths are relative to the list's folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="RESULTS", show_default=False,
                                      help="Results folder (Parquet). Rerunning the same command into it goes on "
                                           "where a killed run stopped.")],
    workers: Annotated[Optional[int], typer.Option(
        "--workers", "-j", min=1, help="Worker processes (Ray: actors), each loading the model once "
                                       "(default: one per core; on Ray, one per CPU of the cluster).")] = None,
    every: Annotated[int, typer.Option("--every", min=1, help="Videos: analyse every Nth frame.")] = 1,
    fps: Annotated[Optional[float], typer.Option(
        "--fps", min=0.001, help="Videos: analyse about F frames per second of video instead of --every.")] = None,
    chunk: Annotated[int, typer.Option(
        "--chunk", min=1, help="Videos: commit results every N frames (where a killed run resumes).")] = 1000,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run on Ray: the cluster in $RAY_ADDRESS or started with `ray start` here, else a new "
                      "local one. Needs the 'ray' extra.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDRESS", help="Run on the Ray cluster at ADDRESS (host:port or "
                                                  "ray://host:10001); implies --ray.")] = None,
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    min_score: MinScoreOpt = 0.5,
    detect_size: Annotated[Optional[int], typer.Option(
        "--detect-size", min=0, help="Detection runs on images scaled to this long side in pixels "
                                     "(default: the run time's, one for photos and one for video frames).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Delete the results already in RESULTS and start again.")] = False,
    progress: Annotated[Optional[bool], typer.Option(
        "--progress/--no-progress", help="Progress bars with ETA (default: when stderr is a terminal).")] = None,
) -> None:
    """Find every face in many images and videos and label its expression: one Parquet row per face per image or analysed video frame, on a local process pool or a Ray cluster.

    RESULTS holds faces/ (the rows), status/ (one row per source: done or failed, and why) and job.json (the settings). Read them with ferkit.read_results(RESULTS) and ferkit.read_results(RESULTS, table="status"), or summarise them with `ferkit report RESULTS`.

    Each source is committed on its own (a video every --chunk frames), so a killed job rerun with the same command skips what is done and loses or repeats nothing; failed sources are tried again. A bad source fails alone: the exit status is 1 when any source failed, 0 when all are done.
    """
    from ferkit.batch import run_job

    summary = run_job(sources, out, model=model, detector=detector, min_score=min_score, detect_size=detect_size,
                      tta=tta, every=every, fps=fps, chunk=chunk, workers=workers, ray=ray, ray_address=ray_address,
                      overwrite=overwrite, progress=progress)
    for w in summary.warnings:
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    for source, reason in summary.failures[:SHOWN_FAILURES]:
        typer.secho(f"failed: {reason}" if reason.startswith(source) else f"failed: {source}: {reason}", err=True)
    typer.echo(summary.line())
    if summary.peak_rss_mb:
        peaks = sorted(summary.peak_rss_mb.values())
        typer.echo(f"peak memory per worker: {peaks[0]:.0f}-{peaks[-1]:.0f} MiB" if len(peaks) > 1
                   else f"peak memory of the worker: {peaks[0]:.0f} MiB")
    if summary.failed:
        more = f" ({summary.failed - SHOWN_FAILURES} more not shown)" if summary.failed > SHOWN_FAILURES else ""
        raise fail(f"{summary.failed} of {summary.sources} source(s) failed{more}; every reason is in "
                   f"{summary.results / 'status'} (ferkit.read_results(..., table='status'))", code=1)


@user_errors
def report(
    results: Annotated[Path, typer.Argument(metavar="RESULTS", show_default=False,
                                            help="A folder written by `ferkit analyze`.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="DIR", help="Where to write the report (default: RESULTS/report).")] = None,
) -> None:
    """Summarise `ferkit analyze` results: DIR/sources.csv (one row per source: status, faces, frames, tracks, main label, mean probability of each class) and DIR/plots/*.emotions.png (each video's emotions over time)."""
    from ferkit.batch.report import write_report

    rep = write_report(results, out or results / "report")
    typer.echo(f"{rep.sources} source(s), {len(rep.plots)} video plot(s)\nwrote {rep.csv}")
    if rep.plots:
        typer.echo(f"wrote {rep.plots[0].parent}/ ({len(rep.plots)} PNG)")


PANEL = "Recognise expressions"  # the panel of the run-time commands in `ferkit --help`


def register(app: typer.Typer) -> None:
    for fn in (analyze, report):
        app.command(rich_help_panel=PANEL)(fn)

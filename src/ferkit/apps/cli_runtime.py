"""`ferkit predict | chart | video | webcam | demo`: expressions in photos, videos and live cameras.

Run-time only: numpy, OpenCV, onnxruntime, Pillow/matplotlib — never torch.
"""

from __future__ import annotations

import csv
import io
import stat
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ferkit.apps.errors import user_errors
from ferkit.errors import ImageError, UsageError
from ferkit.runtime.defaults import DETECT_SIZE_FRAMES, DETECT_SIZE_PHOTO

console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="ONNX model file (its .json card beside it) or a shipped name: fer2013-7 (default; also 'accurate'), "
                   "fer2013-7-fast (also 'fast': one view a face, several times faster), fer2013-7-robust (also 'robust': "
                   "holds up better on blurred, noisy, compressed or tiny faces), ferplus-8.")]
DetectorOpt = Annotated[str, typer.Option(
    "--detector", "-d", help="Face detector: auto (YuNet; else CenterFace if installed; else Haar), yunet, centerface, haar.")]
MinScoreOpt = Annotated[float, typer.Option("--min-score", help="Drop detections less confident than this.")]
TtaOpt = Annotated[Optional[str], typer.Option(
    "--tta", help="Test-time augmentation: the model card's choice (default), none (fastest), flip (face + mirror), "
             "crops (5 crops + mirrors) or multi (16 views: shifted, zoomed, mirrored).")]
MaxSideOpt = Annotated[int, typer.Option(
    "--detect-size", help="Detection runs on the image scaled down to this many pixels on its long side (speed vs small faces).")]


def check_options(tta=None, min_score=0.5, detect_size=0, max_frames=None) -> None:
    """The run-time commands' shared options, checked before anything loads (UsageError naming the option)."""
    from ferkit.preprocessing import check_tta
    from ferkit.runtime.video import check_frame_limit

    if tta is not None:
        check_tta(tta, "--tta")
    if not 0 <= min_score <= 1:
        raise UsageError(f"--min-score must be between 0 and 1, not {min_score}")
    if detect_size != 0 and detect_size < 32:
        raise UsageError(f"--detect-size must be 0 (the full image) or at least 32 pixels, not {detect_size}")
    check_frame_limit(max_frames)


def _analyzer(model, detector, min_score=0.5, max_side=DETECT_SIZE_PHOTO, tta=None, live=False):
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.runtime.pipeline import Analyzer

    check_options(tta, min_score, max_side)
    return Analyzer(FacialExpressionModel(model, tta=tta, live=live), detector, min_score=min_score, max_side=max_side)


def _fail(msg: str) -> None:
    err_console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)


def _warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False, soft_wrap=True)


def _faces_table(rows, title: str) -> Table:
    table = Table(title=title)
    for col, just in (("image", "left"), ("face", "right"), ("expression", "left"), ("conf.", "right"),
                      ("box x1,y1,x2,y2", "left"), ("score", "right")):
        table.add_column(col, justify=just)
    for name, i, f in rows:
        table.add_row(name, str(i), f.label, f"{f.confidence:.0%}", ", ".join(f"{v:.0f}" for v in f.box), f"{f.score:.2f}")
    return table


def check_inputs(paths: list[Path], what: str = "an image") -> None:
    """Every path given exists and is a folder or a regular file (a FIFO would block the reader), else one line."""
    from ferkit.fileio import file_kind

    for p in paths:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            raise ImageError(f"{p}: no such file or folder") from None
        except OSError as exc:
            raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise ImageError(f"{p}: not a regular file ({file_kind(mode)}), so not {what}")


def expand_inputs(paths: list[Path], exclude: Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(files, skipped): files as given; folders -> the image files inside them (recursively, sorted), and
    (path, reason) for every other entry found there (named so, never dropped silently). Nothing under
    `exclude` (the output folder) is looked at."""
    from ferkit.fileio import file_kind
    from ferkit.images import IMAGE_SUFFIXES

    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    ex = exclude.resolve() if exclude is not None and exclude.exists() else None
    for p in paths:
        if not p.is_dir():
            files.append(p)
            continue
        found = 0
        for q in sorted(p.rglob("*")):
            if ex is not None and q.resolve().is_relative_to(ex):
                continue
            try:
                mode = q.stat().st_mode
            except OSError as exc:
                skipped.append((q, "a broken link" if q.is_symlink() else f"cannot read ({exc.strerror or exc})"))
                continue
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                skipped.append((q, f"not a regular file ({file_kind(mode)})"))
            elif q.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((q, f"not named like an image ({q.suffix or 'no suffix'})"))
            else:
                files.append(q)
                found += 1
        if not found:
            _warn(f"{p}: no image files in this folder")
    return files, skipped


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def _unique_name(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    name = stem
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name


@user_errors
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for annotated images, results.json and results.csv.")] = Path("ferkit_predictions"),
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    min_score: MinScoreOpt = 0.5,
    detect_size: MaxSideOpt = DETECT_SIZE_PHOTO,
    no_images: Annotated[bool, typer.Option("--no-images", help="Write only results.json/csv, no annotated images.")] = False,
) -> None:
    """Find the faces in images and label their expressions: annotated images + results.json + results.csv.

    A path given that does not exist (or is a FIFO or device) stops the command before anything is
    written (exit 2). A bad file (unreadable, truncated, not an image, no face) is reported by name and
    the batch goes on; the exit status is 1 when any file failed or had no face. Files in folders that
    are not named like images are listed as skipped.
    """
    from ferkit.fileio import atomic_write_json, atomic_write_text, ensure_dir, write_image
    from ferkit.images import read_image
    from ferkit.runtime.draw import draw_results

    check_options(tta, min_score, detect_size)
    check_inputs(inputs)
    files, skipped = expand_inputs(inputs, exclude=out)  # never re-read our own annotated images
    for path, why in skipped:
        _warn(f"skipped {path}: {why}")
    if not files:
        raise ImageError(f"no image files in {', '.join(map(str, inputs))}")
    analyzer = _analyzer(model, detector, min_score, detect_size, tta)
    ensure_dir(out)
    records, table_rows, used = [], [], set()
    failed = no_face = 0
    for path in files:
        rec = {"file": str(path), "faces": [], "error": None}
        try:
            image = read_image(path)
            rec["width"], rec["height"] = int(image.shape[1]), int(image.shape[0])
            faces = analyzer.analyze(image)
        except ImageError as exc:
            rec["error"] = str(exc)
            failed += 1
            _fail(str(exc))
            records.append(rec)
            continue
        rec["faces"] = [f.to_dict() for f in faces]
        if not faces:
            rec["error"] = f"{path}: no face found"
            no_face += 1
            _warn(rec["error"])
        if not no_images:
            ext = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
            dst = write_image(out / f"{_unique_name(path, used)}.annotated{ext}", draw_results(image, faces))
            rec["annotated"] = str(dst)
        table_rows += [(path.name, i + 1, f) for i, f in enumerate(faces)]
        records.append(rec)

    classes = list(analyzer.classes)
    meta = {"model": analyzer.model.name, "model_file": str(analyzer.model.file), "precision": analyzer.model.precision,
            "detector": analyzer.detector.name,
            "classes": classes}
    atomic_write_json(out / "results.json", {**meta, "images": records,
                                             "skipped": [{"file": str(p), "reason": why} for p, why in skipped]})
    rows = [["file", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence", *classes, "error"]]
    for rec in records:
        if not rec["faces"]:
            rows.append([rec["file"], "", "", "", "", "", "", "", "", *[""] * len(classes), rec["error"]])
        for i, f in enumerate(rec["faces"]):
            rows.append([rec["file"], i + 1, *f["box"], f["score"], f["label"], f["confidence"],
                         *(f["probabilities"][c] for c in classes), ""])
    atomic_write_text(out / "results.csv", _csv_text(rows))
    if table_rows:
        console.print(_faces_table(table_rows, f"{len(table_rows)} face(s) in {len(files) - failed - no_face} image(s)"))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.csv'}"
                  + ("" if no_images else f" and the annotated images in {out}/"))
    if failed or no_face:
        parts = [f"{failed} could not be read"] if failed else []
        parts += [f"{no_face} had no face"] if no_face else []
        _fail(f"{failed + no_face} of {len(files)} image(s) failed: {', '.join(parts)}")
        raise typer.Exit(1)


@user_errors
def chart(
    image: Annotated[Path, typer.Argument(help="An image file.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: IMAGE_STEM.chart.png here).")] = None,
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    min_score: MinScoreOpt = 0.5,
    detect_size: MaxSideOpt = DETECT_SIZE_PHOTO,
) -> None:
    """A bar chart of the expression probabilities of each face in an image."""
    from ferkit.images import read_image
    from ferkit.runtime.charts import chart_format, probability_chart

    check_options(tta, min_score, detect_size)
    dst = out or Path(f"{image.stem}.chart.png")
    chart_format(dst)  # a name it cannot write fails before any work
    img = read_image(image)  # a missing file, a FIFO or a bad image fails before the model loads
    analyzer = _analyzer(model, detector, min_score, detect_size, tta)
    faces = analyzer.analyze(img)
    if not faces:
        _fail(f"{image}: no face found")
        raise typer.Exit(1)
    probability_chart(faces, dst, image=img, title=image.name)
    console.print(_faces_table([(image.name, i + 1, f) for i, f in enumerate(faces)], f"{len(faces)} face(s)"))
    console.print(f"wrote {dst}")


@user_errors
def video(
    src: Annotated[Path, typer.Argument(metavar="IN", help="A video file.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output .mp4 (H.264) / .webm, or a folder (default: IN_STEM_ferkit/).")] = None,
    every: Annotated[int, typer.Option("--every", min=1, help="Analyse every Nth frame (others reuse the latest labels).")] = 1,
    smooth: Annotated[float, typer.Option("--smooth", min=0.01, max=1.0, help="Weight of the newest frame in each face's moving average (1 = no smoothing).")] = 0.4,
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    min_score: MinScoreOpt = 0.5,
    detect_size: MaxSideOpt = DETECT_SIZE_FRAMES,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after this many frames (1 or more; default: all).")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Copy the source's sound into the annotated video.")] = True,
    max_pixels: Annotated[Optional[int], typer.Option(
        "--max-pixels", help="Refuse videos whose frames have more pixels than this (default: $FERKIT_MAX_PIXELS or 80 million).")] = None,
) -> None:
    """Annotate a video: a browser-playable video, a per-frame CSV of every face, and an emotions-over-time plot.

    Nothing is written unless the job gets through: the three files appear together at the end."""
    from tqdm import tqdm

    from ferkit.runtime.video import open_video, output_paths, process_video

    check_options(tta, min_score, detect_size, max_frames)
    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"--max-pixels must be 1 or more, not {max_pixels}")
    output_paths(src, out)  # bad names and unreadable files fail before any progress bar
    open_video(src, max_pixels)[0].release()
    analyzer = _analyzer(model, detector, min_score, detect_size, tta, live=True)
    bar = tqdm(unit="frame", desc=src.name, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        report = process_video(src, out, analyzer=analyzer, every=every, alpha=smooth, max_frames=max_frames,
                               audio=audio, progress=progress, max_pixels=max_pixels)
    finally:
        bar.close()
    console.print(f"{report.frames} frames ({report.analysed} analysed) at {report.frames / max(report.seconds, 1e-9):.1f} "
                  f"frames/s; {report.tracks} face track(s), {report.faces} face rows")
    console.print(f"wrote {report.video}\nwrote {report.csv}\nwrote {report.plot}")
    for w in report.warnings:
        _warn(w)
    if report.ended_early:
        raise typer.Exit(1)


@user_errors
def webcam(
    source: Annotated[str, typer.Option("--source", "-s", help="Camera index (0, 1, …) or a video file.")] = "0",
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    every: Annotated[int, typer.Option("--every", min=1, help="Analyse every Nth frame.")] = 1,
    detect_size: MaxSideOpt = DETECT_SIZE_FRAMES,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Close after this many frames (1 or more).")] = None,
) -> None:
    """A live window with boxes, labels and FPS (q or Esc quits). Without a display, use `ferkit serve`."""
    from ferkit.runtime.webcam import DisplayError, has_display, run_webcam

    check_options(tta, 0.5, detect_size, max_frames)
    if not has_display():  # say so before loading models
        raise DisplayError("no display here (DISPLAY is not set), so no window can open. Instead, run `ferkit serve` "
                           "and open http://127.0.0.1:8000 in a browser on the machine with the camera: the page uses "
                           "the browser's own webcam")
    shown = run_webcam(source, _analyzer(model, detector, 0.5, detect_size, tta, live=True), every=every, max_frames=max_frames)
    console.print(f"showed {shown} frames")


@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the annotated photo, chart and JSON.")] = Path("ferkit-demo"),
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
    detect_size: MaxSideOpt = DETECT_SIZE_PHOTO,
) -> None:
    """Run the whole pipeline on the bundled photo (a NASA astronaut's portrait) and show what it found."""
    from ferkit.assets import demo_photo
    from ferkit.fileio import atomic_write_json, ensure_dir, write_image
    from ferkit.images import read_image
    from ferkit.runtime.charts import probability_chart
    from ferkit.runtime.draw import draw_results

    src = demo_photo()
    analyzer = _analyzer(model, detector, max_side=detect_size, tta=tta)
    img = read_image(src)
    faces = analyzer.analyze(img)
    ensure_dir(out)
    annotated, chart_png, js = out / "astronaut.annotated.png", out / "astronaut.chart.png", out / "astronaut.json"
    write_image(annotated, draw_results(img, faces))
    probability_chart(faces, chart_png, image=img, title=src.name)
    atomic_write_json(js, {"image": str(src), "model": analyzer.model.name, "detector": analyzer.detector.name,
                           "faces": [f.to_dict() for f in faces]})
    console.print(_faces_table([(src.name, i + 1, f) for i, f in enumerate(faces)],
                               f"ferkit demo — model {analyzer.model.name}, detector {analyzer.detector.name}"))
    for i, f in enumerate(faces):
        top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
        console.print(f"face {i + 1}: " + ", ".join(f"{k} {v:.0%}" for k, v in top))
    console.print(f"wrote {annotated}\nwrote {chart_png}\nwrote {js}")
    if not faces:
        _fail(f"{src}: no face found")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for fn in (predict, chart, video, webcam, demo):
        app.command()(fn)

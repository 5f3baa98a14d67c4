"""`ferkit predict | chart | video | webcam | demo`: expressions in photos, videos and live cameras.

Run-time only: numpy, OpenCV, onnxruntime, Pillow/matplotlib — never torch.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ferkit.apps.errors import user_errors

console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="ONNX model file (its .json card beside it) or a shipped name: fer2013-7 (default), ferplus-8.")]
DetectorOpt = Annotated[str, typer.Option(
    "--detector", "-d", help="Face detector: auto (CenterFace if installed, else Haar), centerface, haar.")]
MinScoreOpt = Annotated[float, typer.Option("--min-score", help="Drop detections less confident than this.")]
TtaOpt = Annotated[Optional[str], typer.Option(
    "--tta", help="Test-time augmentation: the model card's choice (default), none (fastest), flip (face + mirror), "
             "crops (5 crops + mirrors) or multi (16 views: shifted, zoomed, mirrored).")]
MaxSideOpt = Annotated[int, typer.Option(
    "--detect-size", help="Detection runs on the image scaled down to this many pixels on its long side (speed vs small faces).")]


def _analyzer(model, detector, min_score=0.5, max_side=640, tta=None, live=False):
    from ferkit.modelcard import RUNTIME_TTA
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.runtime.pipeline import Analyzer

    if tta is not None and tta not in RUNTIME_TTA:
        raise ValueError(f"--tta {tta!r}: choose {' or '.join(RUNTIME_TTA)} (or leave it out for the model card's)")
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


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders -> the image files inside them (recursively, sorted)."""
    from ferkit.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                _warn(f"{p}: no image files in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


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
    detect_size: MaxSideOpt = 960,
    no_images: Annotated[bool, typer.Option("--no-images", help="Write only results.json/csv, no annotated images.")] = False,
) -> None:
    """Find the faces in images and label their expressions: annotated images + results.json + results.csv.

    A bad file (unreadable, truncated, not an image, no face) is reported by name and the batch goes on;
    the exit status is 1 when any file failed or had no face.
    """
    import cv2

    from ferkit.images import ImageError, read_image
    from ferkit.runtime.draw import draw_results

    analyzer = _analyzer(model, detector, min_score, detect_size, tta)
    files = expand_inputs(inputs)
    if out.exists():  # never re-read our own annotated images when OUT sits inside an input folder
        files = [f for f in files if not (f.resolve().is_relative_to(out.resolve()) and f not in inputs)]
    if not files:
        raise ValueError("no input images")
    out.mkdir(parents=True, exist_ok=True)
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
            dst = out / f"{_unique_name(path, used)}.annotated{ext}"
            cv2.imwrite(str(dst), draw_results(image, faces))
            rec["annotated"] = str(dst)
        table_rows += [(path.name, i + 1, f) for i, f in enumerate(faces)]
        records.append(rec)

    classes = list(analyzer.classes)
    meta = {"model": analyzer.model.name, "model_file": str(analyzer.model.path), "detector": analyzer.detector.name,
            "classes": classes}
    (out / "results.json").write_text(json.dumps({**meta, "images": records}, indent=2) + "\n")
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence", *classes, "error"])
        for rec in records:
            if not rec["faces"]:
                w.writerow([rec["file"], "", "", "", "", "", "", "", "", *[""] * len(classes), rec["error"]])
            for i, f in enumerate(rec["faces"]):
                w.writerow([rec["file"], i + 1, *f["box"], f["score"], f["label"], f["confidence"],
                            *(f["probabilities"][c] for c in classes), ""])
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
) -> None:
    """A bar chart of the expression probabilities of each face in an image."""
    from ferkit.images import read_image
    from ferkit.runtime.charts import probability_chart

    analyzer = _analyzer(model, detector, min_score, 960, tta)
    img = read_image(image)
    faces = analyzer.analyze(img)
    if not faces:
        _fail(f"{image}: no face found")
        raise typer.Exit(1)
    dst = out or Path(f"{image.stem}.chart.png")
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
    detect_size: MaxSideOpt = 480,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after this many frames.")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Copy the source's sound into the annotated video.")] = True,
) -> None:
    """Annotate a video: a browser-playable video, a per-frame CSV of every face, and an emotions-over-time plot."""
    from tqdm import tqdm

    from ferkit.runtime.video import open_video, output_paths, process_video

    output_paths(src, out)  # bad names and unreadable files fail before any progress bar
    open_video(src)[0].release()
    analyzer = _analyzer(model, detector, min_score, detect_size, tta, live=True)
    bar = tqdm(unit="frame", desc=src.name, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        report = process_video(src, out, analyzer=analyzer, every=every, alpha=smooth, max_frames=max_frames,
                               audio=audio, progress=progress)
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
    detect_size: MaxSideOpt = 320,  # live: speed first (see bench/runtime_speed.py)
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Close after this many frames.")] = None,
) -> None:
    """A live window with boxes, labels and FPS (q or Esc quits). Without a display, use `ferkit serve`."""
    from ferkit.runtime.webcam import DisplayError, has_display, run_webcam

    if not has_display():  # say so before loading models
        raise DisplayError("no display here (DISPLAY is not set), so no window can open. Instead, run `ferkit serve` "
                           "and open http://127.0.0.1:8000 in a browser on the machine with the camera: the page uses "
                           "the browser's own webcam")
    shown = run_webcam(source, _analyzer(model, detector, 0.5, detect_size, tta, live=True), every=every, max_frames=max_frames)
    console.print(f"showed {shown} frames")


def demo_image_path() -> Path:
    """scikit-image's astronaut.png (Eileen Collins, a public-domain NASA portrait), located without importing skimage."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the demo photo ships with scikit-image, which is not installed: pip install scikit-image")
    for folder in spec.submodule_search_locations:
        p = Path(folder) / "data" / "astronaut.png"
        if p.is_file():
            return p
    raise ValueError("scikit-image is installed but its data/astronaut.png is missing")


@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the annotated photo, chart and JSON.")] = Path("ferkit-demo"),
    model: ModelOpt = None,
    detector: DetectorOpt = "auto",
    tta: TtaOpt = None,
) -> None:
    """Run the whole pipeline on a bundled photo (scikit-image's astronaut) and show what it found."""
    import cv2

    from ferkit.images import read_image
    from ferkit.runtime.charts import probability_chart
    from ferkit.runtime.draw import draw_results

    src = demo_image_path()
    analyzer = _analyzer(model, detector, tta=tta)
    img = read_image(src)
    faces = analyzer.analyze(img)
    out.mkdir(parents=True, exist_ok=True)
    annotated, chart_png, js = out / "astronaut.annotated.png", out / "astronaut.chart.png", out / "astronaut.json"
    cv2.imwrite(str(annotated), draw_results(img, faces))
    probability_chart(faces, chart_png, image=img, title="astronaut.png (scikit-image)")
    js.write_text(json.dumps({"image": str(src), "model": analyzer.model.name, "detector": analyzer.detector.name,
                              "faces": [f.to_dict() for f in faces]}, indent=2) + "\n")
    console.print(_faces_table([("astronaut.png", i + 1, f) for i, f in enumerate(faces)],
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

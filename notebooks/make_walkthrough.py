"""Write notebooks/walkthrough.ipynb (unexecuted) from the cells below: `python notebooks/make_walkthrough.py`.

The notebook is kept as source here so that its diffs stay readable; tests/test_notebook.py checks that
the committed .ipynb is what this script writes, then runs it on the real data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "walkthrough.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """\
# ferkit walkthrough: data, a small net, evaluation, a photo and a video

This notebook uses ferkit's Python API end to end:

1. **explore** FER2013: a grid of faces per class and the class balance of each split;
2. **train** a small net for a few epochs on a sample, with the learning curves drawn live;
3. **evaluate** it (and the shipped model) on PrivateTest: accuracy and a confusion matrix;
4. **analyse a photo**: faces, expressions, an annotated image and a bar chart, as a pandas DataFrame;
5. **analyse a video**: an emotion timeline per tracked face, as a DataFrame and a plot.

It needs the development install (`make install-dev`: torch for step 2, pandas) and the FER2013 CSV, found
through `$FERKIT_DATA` or `ferkit.data.default_data_dir()`. Everything it writes goes to `walkthrough-out/`.
On two CPU cores the whole notebook runs in a few minutes; the training step is deliberately tiny (a
sample of three classes, three epochs): the shipped models were trained for hours."""),
    ("code", """\
import io
import os
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, clear_output, display

import ferkit
from ferkit.data import default_data_dir, load_dataset

DATA = Path(os.environ.get("FERKIT_DATA") or default_data_dir())
OUT = Path("walkthrough-out")
OUT.mkdir(exist_ok=True)


def show(fig, close=True):
    # a matplotlib figure shown here as a PNG, whatever backend matplotlib is on
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    if close:
        plt.close(fig)
    display(Image(data=buf.getvalue()))


print("ferkit", ferkit.__version__, "| data:", DATA)"""),
    ("md", "## 1. Explore the data\n\nFER2013: 35,887 grey 48x48 faces, seven expressions, three splits."),
    ("code", """\
faces = load_dataset(DATA)
print(f"{len(faces):,} faces, classes: {', '.join(faces.class_names)}; splits: {', '.join(faces.split_names())}")

from ferkit.data.explore import face_grid

display(Image(filename=str(face_grid(faces.split("Training"), OUT / "faces.png", per_class=10))))"""),
    ("code", """\
balance = pd.crosstab(pd.Series(np.asarray(faces.class_names)[faces.labels], name="class"),
                      pd.Series(faces.splits, name="split"))[faces.split_names()]
display(balance)
ax = (balance / balance.sum()).plot.bar(figsize=(9, 3.5), rot=0, title="Class balance per split (share of the split)")
ax.set_ylabel("share of faces")
show(ax.figure)"""),
    ("md", """\
`disgust` is rare (1.5% of the faces) and `happy` common (25%): accuracy alone hides how each class fares,
which is why step 3 shows the confusion matrix.

## 2. Train a small net, with live curves

`ferkit.train.loop.train` runs epochs and checkpoints them into a run folder; called again with
`resume=True` it continues where it stopped. Running one epoch per call lets the notebook redraw the
curves after each one (`ferkit train` on the command line does the same in one go)."""),
    ("code", """\
from ferkit.train.config import TrainConfig
from ferkit.train.loop import train

CLASSES = ["happy", "surprise", "neutral"]
cfg = TrainConfig(data=str(DATA), classes=CLASSES, model="seed-cnn-small", limit=1500, epochs=3,
                  out=str(OUT / "run"), seed=0)

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
state = {"epoch": 0}
while state["epoch"] < cfg.epochs:
    state = train(cfg, resume=True, progress=False, stop_after=1)
    history = pd.DataFrame(state["history"]).set_index("epoch")
    for ax, cols, title in ((ax_loss, ["train_loss", "val_loss"], "loss"), (ax_acc, ["train_acc", "val_acc"], "accuracy")):
        ax.clear()
        history[cols].plot(ax=ax, marker="o", title=title)
        ax.set_xticks(history.index)
    clear_output(wait=True)
    show(fig, close=False)
plt.close(fig)
display(history)"""),
    ("md", """\
## 3. Evaluate on PrivateTest

The run's best checkpoint (chosen on PublicTest) scored on PrivateTest, beside the shipped `fer2013-7`
model on the same three classes (its other classes are left out of the scoring)."""),
    ("code", """\
from ferkit.evaluation import evaluate_faces, onnx_predictor, plot_confusion
from ferkit.train.predictor import run_predictor

test = load_dataset(DATA, classes=tuple(CLASSES)).split("PrivateTest")
ours = run_predictor(cfg.out)
metrics, _ = evaluate_faces(ours, test, ours.classes)
shipped = onnx_predictor("fer2013-7")
shipped_metrics, _ = evaluate_faces(shipped, test, shipped.classes)
print(f"our small net: {metrics['accuracy']:.1%} on {metrics['n']:,} PrivateTest faces; "
      f"shipped fer2013-7 on the same faces: {shipped_metrics['accuracy']:.1%}")
display(pd.DataFrame(metrics["per_class"]).T.round(3))
display(Image(filename=str(plot_confusion(metrics, OUT / "confusion.png", title="small net, PrivateTest"))))"""),
    ("md", """\
## 4. Analyse a photo

`ferkit.analyze` takes a path, bytes, a PIL image or a numpy array and returns one `FaceResult` per face
(box, detector score, label, probabilities); `ferkit.runtime.tables.results_to_frame` makes a DataFrame of
them. The photo is the one `ferkit demo` uses, bundled with ferkit."""),
    ("code", """\
from ferkit.assets import demo_photo
from ferkit.runtime.charts import probability_chart
from ferkit.runtime.draw import draw_results
from ferkit.runtime.tables import results_to_frame

photo = cv2.imread(str(demo_photo()))
found = ferkit.analyze(photo)
display(results_to_frame(found).round(3))
fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(cv2.cvtColor(draw_results(photo, found), cv2.COLOR_BGR2RGB))
ax.axis("off")
show(fig)
display(Image(data=probability_chart(found, image=photo, title=demo_photo().name)))"""),
    ("md", """\
## 5. Analyse a video

A short clip made from the photo with OpenCV (the face drifts, turns its head to the mirror image and
back), then `ferkit.runtime.process_video`: an annotated video, a CSV with one row per face per frame, and
a timeline plot. `video_report_to_frame` reads the CSV into a DataFrame."""),
    ("code", """\
from ferkit.runtime import process_video
from ferkit.runtime.tables import video_report_to_frame

clip = OUT / "clip.mp4"
writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
head = cv2.resize(photo[0:300, 100:360], (208, 240))
for i in range(45):
    frame = np.full((480, 640, 3), (170, 160, 150), np.uint8)
    x = 60 + 8 * i
    frame[120:360, x:x + 208] = head if (i // 15) % 2 == 0 else head[:, ::-1]
    writer.write(frame)
writer.release()

report = process_video(clip, OUT / "clip_ferkit")
print(f"{report.frames} frames, {report.tracks} face track(s); wrote {report.video.name}, {report.csv.name}, {report.plot.name}")
timeline = video_report_to_frame(report)
display(timeline.head())"""),
    ("code", """\
classes = list(shipped.classes)
track = timeline[timeline["face"] == timeline["face"].mode()[0]].set_index("time_s")
ax = track[classes].plot(figsize=(9, 3.5), title="Emotions over time (smoothed probabilities, longest track)")
ax.set_xlabel("seconds")
ax.set_ylabel("probability")
show(ax.figure)
display(track["label"].value_counts().rename("frames").to_frame())
display(Image(filename=str(report.plot)))"""),
    ("md", """\
## Where next

- `ferkit predict photos/ -o out/`: the same analysis for folders of photos (annotated images, JSON, CSV);
- `ferkit video clip.mp4`, `ferkit webcam`, `ferkit serve` (a web page and JSON API);
- `ferkit train DATA --model fer-resnet-s ...` and `ferkit export`: the recipes of the shipped models are
  the `train-*` targets of the Makefile."""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> int:
    nbformat.write(build(), str(NOTEBOOK))
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

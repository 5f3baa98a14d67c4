"""`ferkit evaluate | summary | export`: score a model, describe a network, ship a training run.

`evaluate` on an ONNX file needs only the run-time install plus scikit-learn (never torch);
`summary`, `export` and evaluating a run folder import torch when they run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ferkit.apps.errors import user_errors
from ferkit.errors import UsageError, require_extra
from ferkit.fileio import ensure_dir

O = typer.Option
console = Console()
err_console = Console(stderr=True)


def _default_out(model: str, predictor, split: str, tta: str, head: str | None = None) -> Path:
    if Path(model).is_dir():
        from ferkit.train.run import RunFolder

        return RunFolder(model).eval_reports(head, split, tta)
    return Path("eval") / f"{predictor.path.stem}-{split}-{tta}"


def load_predictor(model: str, threads: int | None = None, head: str | None = None, precision: str = "fp32"):
    """A run folder is scored with torch (`ferkit.train.predictor`), anything else as an ONNX model (the runtime)."""
    if precision not in ("auto", "fp32", "int8"):
        raise UsageError(f"--precision {precision!r}: choose one of auto, fp32, int8")
    if Path(model).is_dir():
        if precision != "fp32":
            raise UsageError(f"--precision {precision}: a run folder is scored in fp32 with torch; evaluate its .onnx")
        require_extra("train", "scoring a training run folder (or evaluate its exported .onnx)", "torch", "safetensors")
        from ferkit.train.predictor import run_predictor

        return run_predictor(model, threads, head)
    if head is not None:
        raise UsageError(f"--head {head!r} picks a head of a joint training run folder; {model} is not a run folder")
    from ferkit.evaluation import onnx_predictor

    return onnx_predictor(model, threads, precision)


def _metrics_table(m: dict) -> Table:
    table = Table(title=f"{m['model']['name']} on {m['data']['split']}: {m['n']:,} faces, TTA {m['tta']}")
    for col in ("class", "precision", "recall", "F1", "faces", "predicted"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, v in m["per_class"].items():
        if v["support"] == 0 and v["predicted"] == 0:
            continue
        table.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                      f"{v['support']:,}" if v["support"] else "none", f"{v['predicted']:,}")
    table.add_row("all", "", f"{m['macro_recall']:.3f}", f"{m['macro_f1']:.3f}", f"{m['n']:,}", "",
                  style="bold")
    return table


@user_errors
def evaluate(
    model: Annotated[str, typer.Argument(help="A training run folder (model.json + best.safetensors; scored with "
                                              "torch) or an .onnx model with its card .json beside it (or a shipped "
                                              "model's name; scored with onnxruntime).")],
    data: Annotated[Path, typer.Argument(help="FER2013 CSV, folder holding fer2013.csv[.gz], or a folder tree "
                                              "(class folders may use synonyms: happiness, anger, surprised, ...).")],
    split: Annotated[Optional[str], O(help="Split to score (PrivateTest, PublicTest, Training, or 'all'). "
                                           "Default: PrivateTest where present, else every face.")] = None,
    tta: Annotated[Optional[str], O(help="Test-time augmentation: none | flip | crops (5 crops of 44x44 + mirrors) | "
                                         "multi (face shifted 2 px 4 ways and zoomed 3 ways, + mirrors: 16 views). "
                                         "Default: the model card's setting (what the runtime does), none for runs.")] = None,
    out: Annotated[Optional[Path], O("--out", "-o", help="Folder for metrics.json, confusion.png, reliability.png "
                                                         "(default: RUN/eval-SPLIT-TTA or eval/NAME-SPLIT-TTA).")] = None,
    ferplus: Annotated[Optional[Path], O(help="FER+ votes file (fer2013new.csv): score against the FER+ majority "
                                              "vote (8 classes).")] = None,
    as_json: Annotated[bool, O("--json", help="Print the metrics as JSON on stdout instead of tables.")] = False,
    threads: Annotated[Optional[int], O(help="CPU threads for the model.")] = None,
    head: Annotated[Optional[str], O(help="Joint run folders (--aux-ferplus): which head to score, fer2013 "
                                          "(default) or ferplus (with --ferplus, against the majority vote).")] = None,
    every: Annotated[Optional[int], O(help="Score every Nth face of the split only (faces 0, N, 2N, ...): a quick, "
                                           "deterministic check; model cards record the figure for every 8th.")] = None,
    precision: Annotated[str, O(help="ONNX models: fp32 (the file the card's figures are of), int8 (the card's int8 "
                                     "version, made by ferkit quantize) or auto (what the run time picks on this "
                                     "machine).")] = "fp32",
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix, calibration (ECE) of a model on labelled faces."""
    require_extra("eval", "ferkit evaluate", "sklearn")
    from ferkit.data import load_dataset
    from ferkit.evaluation import choose_split, evaluate as run_evaluation
    from ferkit.preprocessing import TTA_MODES

    if tta is not None and tta not in TTA_MODES:
        raise UsageError(f"--tta {tta!r}: choose one of {', '.join(TTA_MODES)}")
    if every is not None and every < 1:
        raise UsageError(f"--every {every}: must be at least 1")
    predictor = load_predictor(model, threads, head, precision)
    faces = load_dataset(data, ferplus=ferplus)
    split_name, _ = choose_split(faces, split)  # a bad split fails here, before any scoring
    tta = tta or predictor.default_tta
    out = out or _default_out(model, predictor, split_name, tta, head)
    m = run_evaluation(predictor, data, split=split, tta=tta, ferplus=ferplus, out=out, faces=faces, every=every,
                       progress=True)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    d = m["data"]
    sample = f", every {d['sample_every']}th: {d['faces_in_sample']:,}" if d.get("sample_every") else ""
    console.print(f"model [bold]{m['model']['name']}[/bold] ({m['model']['backend']}, {m['model']['architecture']}, "
                  f"{len(m['model']['classes'])} classes)  data {d['source']} split {d['split']}: "
                  f"{d['faces_in_split']:,} faces{sample}", highlight=False, soft_wrap=True)
    for cls, n in m["classes"]["left_out"].items():
        console.print(f"[yellow]left out:[/yellow] {n:,} faces of class {cls!r}, which the model does not know",
                      highlight=False, soft_wrap=True)
    for folder, n in d["unknown_folders"].items():
        console.print(f"[yellow]left out:[/yellow] folder {folder} ({n:,} files): not an emotion name the data "
                      f"readers know", highlight=False, soft_wrap=True)
    if d["skipped_files"]:
        console.print(f"[yellow]skipped:[/yellow] {d['skipped_files']} unreadable files", highlight=False)
    if m["classes"]["absent_from_data"]:
        console.print(f"no faces of: {', '.join(m['classes']['absent_from_data'])}", highlight=False)
    console.print(_metrics_table(m))
    console.print(f"[bold]accuracy {m['accuracy']:.4f}[/bold]  macro-F1 {m['macro_f1']:.4f}  "
                  f"balanced accuracy {m['macro_recall']:.4f}  ECE {m['ece']:.4f} (15 bins)  NLL {m['nll']:.4f}",
                  highlight=False, soft_wrap=True)
    for f in m["files"].values():
        console.print(f"wrote {f}", highlight=False, soft_wrap=True)


@user_errors
def summary(
    model: Annotated[str, typer.Argument(help="A registered architecture (see `ferkit models`) or a training run folder.")],
    classes: Annotated[int, O("--classes", help="Number of classes for an architecture name.")] = 7,
    png: Annotated[Optional[Path], O(help="Write an architecture picture here (PNG).")] = None,
    as_json: Annotated[bool, O("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Keras-style model summary: layers, output shapes, parameters, totals; optionally a picture."""
    require_extra("train", "ferkit summary", "torch", "torchinfo")
    from ferkit.models import create_model, list_models, load_architecture
    from ferkit.train.run import RunFolder
    from ferkit.train.summary import as_dict, plot_architecture, summarize, summary_text

    path = Path(model)
    if path.is_dir():
        run = RunFolder(path).require(weights=False)
        net, spec = load_architecture(run.architecture)
        name = f"{spec['name']} ({path.name})"
    elif model in list_models():
        if classes < 2:
            raise UsageError(f"--classes {classes}: a classifier needs at least 2 classes")
        net, name = create_model(model, classes), model
    else:
        raise UsageError(f"{model!r} is neither a registered model ({', '.join(list_models())}) nor a run folder")
    s = summarize(net, name=name)
    if as_json:
        typer.echo(json.dumps(as_dict(s), indent=2))
    else:
        typer.echo(summary_text(s))
    if png is not None:
        ensure_dir(png.parent)
        plot_architecture(s, png)
        (err_console if as_json else console).print(f"wrote {png}", highlight=False)


@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="Training run folder (model.json, best.safetensors, config.json).")],
    name: Annotated[str, O(help="Model name: writes NAME.onnx and its card NAME.json.")],
    out: Annotated[Path, O("--out", "-o", help="Folder for the ONNX file and card.")],
    tta: Annotated[str, O(help="Test-time augmentation the card asks the runtime to apply: none | flip | crops | "
                                "multi, or auto: the best of them on the run's validation split (PublicTest), "
                                "the fewer views on a tie.")] = "auto",
    data: Annotated[Optional[Path], O(help="Data to check and score on (default: the run's own).")] = None,
    notes: Annotated[str, O(help="Free text for the card.")] = "",
    head: Annotated[Optional[str], O(help="A joint run's head to ship: fer2013 (7 classes, the default) or ferplus "
                                          "(8 classes, scored against the FER+ majority vote).")] = None,
    ensemble: Annotated[Optional[list[Path]], O(help="Another run folder to average with RUN (repeat for more): "
                                                     "one ONNX graph, mean probabilities of every member.")] = None,
    soup: Annotated[Optional[list[Path]], O(help="A run folder or weights file whose weights are averaged with "
                                                 "RUN's (repeat for more): one net of the same size (a weight soup).")] = None,
    half: Annotated[bool, O(help="Store the weights as float16: half the file, float32 compute.")] = False,
) -> None:
    """Export a run to ONNX with its model card; checks ONNX against torch and scores it on PublicTest/PrivateTest."""
    import re

    require_extra("train", "ferkit export", "torch", "safetensors", "onnx", "sklearn")
    from ferkit.train.export import export_run

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    res = export_run(run, name, out, tta=tta, data=data, notes=notes, head=head, ensemble=ensemble or (), half=half,
                     soup=soup or ())
    card = res["card_data"]
    chk = res["check"]
    console.print(f"wrote {res['onnx']} ({res['size_bytes'] / 2**20:.1f} MiB) and {res['card']}", highlight=False)
    console.print(f"ONNX vs torch on {chk['faces']} {chk['split']} faces: max |dp| {chk['max_abs_prob_diff']:.2e}, "
                  f"{chk['argmax_disagreements']} argmax differences", highlight=False)
    if "tta_choice" in card.training:
        ch = card.training["tta_choice"]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in ch["accuracy"].items())
        console.print(f"TTA chosen on {ch['split']}: {ch['chosen']} ({scores})", highlight=False)
    for split, m in card.metrics.items():
        console.print(f"{split}: accuracy {m['accuracy']:.4f} (TTA {m['tta']}, {m['faces']:,} faces)", highlight=False)
    console.print(f"training: {card.training.get('command', '?')}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(summary)
    app.command()(export)

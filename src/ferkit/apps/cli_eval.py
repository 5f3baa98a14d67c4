"""`ferkit evaluate | calibrate-prior | summary | export`: score a model (and its robustness), choose a card's
prior correction, describe a network, ship a training run.

`evaluate` on an ONNX file needs only the run-time install plus scikit-learn (never torch);
`summary`, `export` and evaluating a run folder import torch when they run.
"""

from __future__ import annotations

import json
from dataclasses import replace
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
    table.add_row("all (macro)", "", f"{m['balanced_accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['n']:,}", "",
                  style="bold")
    return table


def _prior_note(model: dict) -> str:
    return f"  prior correction tau {model['prior_tau']:g} (the card's)" if model.get("prior_tau") else ""


def _robustness_table(split: str, r: dict, tta: str, name: str) -> Table:
    table = Table(title=f"{name} on {split}: {r['faces']:,} faces, TTA {tta}")
    for col in ("corruption", "severity", "accuracy", "bal. acc.", "drop (pt)", "bal. drop (pt)"):
        table.add_column(col, justify="left" if col in ("corruption", "severity") else "right")
    c = r["clean"]
    table.add_row("clean", "", f"{c['accuracy']:.4f}", f"{c['balanced_accuracy']:.4f}", "", "", style="bold")
    for row in r["rows"]:
        table.add_row(row["corruption"], row["label"], f"{row['accuracy']:.4f}", f"{row['balanced_accuracy']:.4f}",
                      f"{100 * row['drop']:+.2f}", f"{100 * row['balanced_drop']:+.2f}")
    table.add_row(f"mean of {len(r['rows'])}", "", "", "", f"{100 * r['mean_drop']:+.2f}",
                  f"{100 * r['mean_balanced_drop']:+.2f}", style="bold")
    return table


def _robustness(model, predictor, faces, split, tta, every, seed, corruptions, out, head, as_json) -> None:
    """`ferkit evaluate --robustness`: the corruption suite over the chosen splits; robustness.json in --out."""
    from ferkit.evaluation import choose_split
    from ferkit.evaluation.robustness import robustness_report
    from ferkit.fileio import atomic_write_json
    from ferkit.preprocessing import live_tta

    present = faces.split_names()
    names = [s.strip() for s in split.split(",") if s.strip()] if split else \
        [s for s in ("PublicTest", "PrivateTest") if s in present] or [None]
    subsets = dict(choose_split(faces, name) for name in names)  # a bad split fails here, before any scoring
    tta = tta or live_tta(predictor.default_tta)
    out = out or _default_out(model, predictor, "robustness", tta, head)
    report = robustness_report(predictor, subsets, tta, every, seed, corruptions, progress=True)
    report["files"] = {"robustness": str(ensure_dir(out) / "robustness.json")}
    atomic_write_json(report["files"]["robustness"], report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(f"model [bold]{predictor.name}[/bold] ({predictor.backend}, {predictor.architecture})"
                  f"{_prior_note(report['model'])}" + (f"  every {every}th face" if every and every > 1 else ""),
                  highlight=False, soft_wrap=True)
    for name, r in report["splits"].items():
        console.print(_robustness_table(name, r, tta, predictor.name))
        console.print(f"[bold]{name}: mean drop over the suite {100 * r['mean_drop']:.2f} pt accuracy, "
                      f"{100 * r['mean_balanced_drop']:.2f} pt balanced accuracy[/bold]", highlight=False,
                      soft_wrap=True)
    console.print(f"wrote {report['files']['robustness']}", highlight=False, soft_wrap=True)


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
    robustness: Annotated[bool, O("--robustness", help="Score the faces clean and under a suite of corruptions "
                                                       "(tighter/looser crops, shifts, rotations, brightness, "
                                                       "contrast, gamma, blur, noise, JPEG, low resolution): "
                                                       "accuracy, balanced accuracy and their drop. Splits: --split "
                                                       "(comma-separated), default PublicTest and PrivateTest; TTA: "
                                                       "the live one (flip) unless --tta.")] = False,
    corruption: Annotated[Optional[list[str]], O(metavar="NAME", help="With --robustness: only this corruption "
                                                                      "(repeat for more): crop, shift, rotate, "
                                                                      "brightness, contrast, gamma, blur, noise, "
                                                                      "jpeg, lowres.")] = None,
    seed: Annotated[int, O(help="With --robustness: the seed of the noise corruption.")] = 0,
    no_prior_correction: Annotated[bool, O("--no-prior-correction", help="Score the network's probabilities without "
                                                                         "the card's prior correction.")] = False,
    precision: Annotated[str, O(help="ONNX models: fp32 (the file the card's figures are of), int8 (the card's int8 "
                                     "version, made by ferkit quantize) or auto (what the run time picks on this "
                                     "machine).")] = "fp32",
) -> None:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, calibration (ECE) of a
    model on labelled faces; with --robustness, the same under a suite of corruptions."""
    require_extra("eval", "ferkit evaluate", "sklearn")
    from ferkit.data import load_dataset
    from ferkit.evaluation import choose_split, evaluate as run_evaluation
    from ferkit.preprocessing import TTA_MODES

    if tta is not None and tta not in TTA_MODES:
        raise UsageError(f"--tta {tta!r}: choose one of {', '.join(TTA_MODES)}")
    if every is not None and every < 1:
        raise UsageError(f"--every {every}: must be at least 1")
    if corruption and not robustness:
        raise UsageError("--corruption picks corruptions of --robustness; add --robustness")
    if robustness:
        from ferkit.evaluation.robustness import select

        corruptions = select(corruption)  # an unknown name fails before anything loads
    predictor = load_predictor(model, threads, head, precision)
    if no_prior_correction:
        predictor = replace(predictor, adjust=None, prior_tau=0.0)
    faces = load_dataset(data, ferplus=ferplus)
    if robustness:
        _robustness(model, predictor, faces, split, tta, every, seed, corruptions, out, head, as_json)
        return
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
                  f"{d['faces_in_split']:,} faces{sample}{_prior_note(m['model'])}", highlight=False, soft_wrap=True)
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
    console.print(f"[bold]accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
                  f"macro-F1 {m['macro_f1']:.4f}[/bold]  ECE {m['ece']:.4f} (15 bins)  NLL {m['nll']:.4f}",
                  highlight=False, soft_wrap=True)
    for f in m["files"].values():
        console.print(f"wrote {f}", highlight=False, soft_wrap=True)


@user_errors
def calibrate_prior(
    model: Annotated[str, typer.Argument(help="An .onnx model with its card .json beside it, or a shipped model's "
                                              "name: its card receives the correction.")],
    data: Annotated[Path, typer.Argument(help="FER2013 CSV or the folder holding fer2013.csv[.gz] (Training, "
                                              "PublicTest and PrivateTest).")],
    ferplus: Annotated[Optional[Path], O(help="FER+ votes file (fer2013new.csv), for a model scored against the "
                                              "FER+ majority vote: the prior is Training's mean vote "
                                              "distribution.")] = None,
    dry_run: Annotated[bool, O("--dry-run", help="Show the choice; leave the card as it is.")] = False,
    cache: Annotated[Optional[Path], O(help="Folder for the cached TTA-averaged probabilities (.npy), reused "
                                            "by later runs (default: ferkit-prior in the temporary folder).")] = None,
    as_json: Annotated[bool, O("--json", help="Print the result as JSON.")] = False,
    threads: Annotated[Optional[int], O(help="CPU threads for the model.")] = None,
) -> None:
    """Post-hoc prior correction (logit adjustment): p' = p * prior^-tau with the Training class distribution as
    the prior; tau chosen on PublicTest at the card's TTA (the best balanced accuracy within 0.3 points of the
    best accuracy over tau 0, 0.1, ..., 1). A tau above 0 is written into the card, with the card's PublicTest
    and PrivateTest figures scored under it."""
    require_extra("eval", "ferkit calibrate-prior", "sklearn")
    from ferkit.data import load_dataset
    from ferkit.evaluation import onnx_predictor
    from ferkit.evaluation.prior import calibrate_prior as choose, write_prior_correction

    if Path(model).is_dir():
        raise UsageError(f"{model} is a folder: export the run first (ferkit export), then calibrate its .onnx")
    predictor = onnx_predictor(model, threads, precision="fp32")  # the file the card's figures are of
    faces = load_dataset(data, ferplus=ferplus)
    res = choose(predictor, faces, bool(ferplus), cache, score=not dry_run, progress=True)
    written = None if dry_run or res["tau"] == 0 else write_prior_correction(predictor, res)
    if as_json:
        typer.echo(json.dumps({k: res[k] for k in ("tau", "correction", "metrics")} |
                              {"card": str(written) if written else None}, indent=2))
        return
    pc = res["correction"]
    table = Table(title=f"{predictor.name} on {pc['chosen_on']} (TTA {pc['tta']}): prior correction by tau")
    for col in ("tau", "accuracy", "balanced accuracy", "macro-F1", ""):
        table.add_column(col, justify="right")
    for row in res["grid"]:
        table.add_row(f"{row['tau']:.1f}", f"{row['accuracy']:.4f}", f"{row['balanced_accuracy']:.4f}",
                      f"{row['macro_f1']:.4f}", "chosen" if row["tau"] == res["tau"] else "",
                      style="bold" if row["tau"] == res["tau"] else None)
    console.print(table)
    shares = ", ".join(f"{c} {v:.3f}" for c, v in zip(predictor.classes, pc["prior"]))
    console.print(f"prior ({pc['prior_source']}): {shares}", highlight=False, soft_wrap=True)
    console.print(f"rule: {pc['rule']}", highlight=False, soft_wrap=True)
    for split, m in res["metrics"].items():
        u = res["uncorrected"][split]
        console.print(f"{split}: accuracy {u['accuracy']:.4f} -> {m['accuracy']:.4f}, balanced accuracy "
                      f"{u['balanced_accuracy']:.4f} -> {m['balanced_accuracy']:.4f}, macro-F1 {u['macro_f1']:.4f} "
                      f"-> {m['macro_f1']:.4f} (tau {res['tau']:g}, {m['faces']:,} faces)", highlight=False)
    if written:
        console.print(f"wrote tau {res['tau']:g} into {written}", highlight=False, soft_wrap=True)
    else:
        console.print("card left as it is" + (" (tau 0: no correction)" if res["tau"] == 0 else " (--dry-run)"),
                      highlight=False)


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
    run: Annotated[Path, typer.Argument(help="Training run folder (model.json, best.safetensors, config.json), or a "
                                             "shipped model's NAME.safetensors (card beside it) to --soup with others.")],
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
        console.print(f"{split}: accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
                      f"macro-F1 {m['macro_f1']:.4f} (TTA {m['tta']}, {m['faces']:,} faces)", highlight=False)
    console.print(f"training: {card.training.get('command', '?')}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command("calibrate-prior")(calibrate_prior)
    app.command()(summary)
    app.command()(export)

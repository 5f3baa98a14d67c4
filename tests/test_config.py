"""Training settings declared once: `ferkit train`'s options are TrainConfig's fields, recipes under configs/ are
those fields as JSON, bad settings are one line before any folder exists, and --resume continues the folder it
is given, applying or refusing the settings given with it. Also the one-line option added since: --grad-clip."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import typer

from _fer_small import assert_one_line_error, real_data_dir, run_cli, small_csv
from ferkit.apps.cli import app
from ferkit.apps.cli_train import plan_run
from ferkit.errors import ConfigError
from ferkit.train.config import TrainConfig, default_of, flag_of, load_recipe

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TRAIN = typer.main.get_command(app).commands["train"]

# The Makefile's flag strings before its recipes became files: each configs/ file must say exactly this.
NET = ("--model fer-resnet-s --optimizer sgd --weight-decay 5e-4 --batch-size 128 --label-smoothing 0.1 "
       "--crop-pad 4 --erasing 0.25")
FORMER_FLAGS = {
    "joint": f"{NET} --lr 0.05 --schedule onecycle --epochs 42",
    "restart": f"{NET} --lr 0.02 --schedule cosine --warmup-epochs 2 --epochs 38 --seed 1",
    "finetune": f"{NET} --lr 0.005 --schedule cosine --warmup-epochs 1 --epochs 24 --mixup 0.2 --seed 3",
    "cycle3": f"{NET} --lr 0.02 --schedule cosine --warmup-epochs 2 --epochs 36 --seed 2",
    "finetune-fp": f"{NET} --aux-weight 2 --lr 0.003 --schedule cosine --warmup-epochs 1 --epochs 15 --mixup 0.2 --seed 4",
    "seed-cnn": "--model seed-cnn",  # the tutorial recipe is the defaults
}


def plan(*args) -> object:
    """What `ferkit train ARGS` asks for, through the command's own parser."""
    return plan_run(TRAIN.make_context("train", [str(a) for a in args]))


# ----------------------------------------------------------------------------- one declaration
def test_every_option_is_a_config_field_with_its_default_and_help():
    params = {p.name: p for p in TRAIN.params}
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            assert f.name not in params
            continue
        p = params[f.name]
        assert p.help == f.metadata["help"] or f.name == "data"
        if f.name != "data":
            assert flag_of(f.name) in p.opts, (f.name, p.opts)
            expected = default_of(f.name)
            shown = p.default if not isinstance(p.default, Path) else str(p.default)
            assert shown == (expected if expected != [] else None), f.name
    assert set(params) - {f.name for f in fields(TrainConfig)} == {"resume", "config"}
    assert "-o" in params["out"].opts and params["teachers"].multiple
    assert not hasattr(TrainConfig(), "eval_tta")


def test_command_line_values_become_config_values():
    p = plan("d.csv", "--teacher", "a", "--teacher", "b/best-ferplus.safetensors", "--classes", "Happiness,sad",
             "--no-flip", "--init", "runs/x", "-o", "runs/y", "--epochs", "3", "--grad-clip", "2.5")
    assert (p.cfg.teachers, p.cfg.classes, p.cfg.flip, p.cfg.init) == (["a", "b/best-ferplus.safetensors"],
                                                                       ["happy", "sad"], False, "runs/x")
    assert (p.cfg.out, p.cfg.epochs, p.cfg.grad_clip, p.cfg.data) == ("runs/y", 3, 2.5, "d.csv")
    assert asdict(plan("d.csv").cfg) == asdict(TrainConfig(data="d.csv"))


@pytest.mark.parametrize("name", sorted(FORMER_FLAGS))
def test_each_recipe_file_is_its_former_flags(name):
    from_file = plan("DATA", "--config", CONFIGS / f"{name}.json").cfg
    from_flags = plan("DATA", *shlex.split(FORMER_FLAGS[name])).cfg
    assert asdict(from_file) == asdict(from_flags)


def test_options_override_the_recipe(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"model": "mlp", "epochs": 3, "lr": 0.01}))
    p = plan("DATA", "--config", recipe, "--epochs", 1)
    assert (p.cfg.model, p.cfg.epochs, p.cfg.lr) == ("mlp", 1, 0.01)
    assert p.recipe == {"file": str(recipe), "settings": {"model": "mlp", "epochs": 3, "lr": 0.01}}
    toml = tmp_path / "r.toml"
    toml.write_text('model = "mlp"\nlr = 0.02\n')
    assert (plan("DATA", "--config", toml).cfg.lr) == 0.02


def test_an_old_config_json_with_a_retired_setting_still_loads(tmp_path):
    old = {**asdict(TrainConfig(data="x.csv", epochs=4)), "eval_tta": True}
    del old["grad_clip"]  # older than the option, too
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert TrainConfig.load(tmp_path / "config.json").epochs == 4
    assert plan("x.csv", "--config", tmp_path / "config.json").cfg.epochs == 4
    assert load_recipe(tmp_path / "config.json")["epochs"] == 4


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "found a JSON list"), ("{not json", "not a JSON file"), ('{"lrr": 0.1}', "unknown setting 'lrr'"),
    ('{"epochs": "ten"}', "epochs = 'ten'"), ('{"flip": 1}', "flip = 1"),
])
def test_bad_recipe_files_are_config_errors(tmp_path, content, fragment):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        plan("DATA", "--config", tmp_path / "r.json")


# ----------------------------------------------------------------------------- checked before any folder
def _cuda_case() -> list[str]:
    import torch

    return ["--device", "cuda:99" if torch.cuda.is_available() else "cuda"]


@pytest.mark.parametrize("case", ["optimizer", "schedule", "precision", "device", "batch size", "epochs", "cuda",
                                  "config list", "config missing", "model", "neutral weight", "neutral alone"])
def test_bad_settings_are_one_line_and_leave_no_run_folder(tmp_path, case):
    pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")
    (tmp_path / "list.json").write_text("[]")
    args, fragments = {
        "optimizer": (["--optimizer", "adamm"], ["--optimizer", "adamm", "sgd"]),
        "schedule": (["--schedule", "cosin"], ["--schedule", "cosin", "onecycle"]),
        "precision": (["--precision", "fp16"], ["--precision", "fp16", "bf16"]),
        "device": (["--device", "gpu"], ["--device", "gpu"]),
        "batch size": (["--batch-size", "0"], ["--batch-size 0"]),
        "epochs": (["--epochs", "0"], ["--epochs 0"]),
        "cuda": (_cuda_case(), ["--device cuda"]),
        "config list": (["--config", tmp_path / "list.json"], ["list.json", "JSON list"]),
        "config missing": (["--config", tmp_path / "none.json"], ["none.json"]),
        "model": (["--model", "resnet-9000"], ["unknown model 'resnet-9000'"]),
        "neutral weight": (["--ferplus", real_data_dir() / "fer2013new.csv", "--ferplus-neutral", "1.5"],
                           ["--ferplus-neutral 1.5", "between 0 and 1"]),
        "neutral alone": (["--ferplus-neutral", "0.5"], ["--ferplus-neutral 0.5", "--ferplus"]),
    }[case]
    out = tmp_path / "run"
    assert_one_line_error(run_cli("train", real_data_dir(), *args, "-o", out), *fragments)
    assert not out.exists()


# ----------------------------------------------------------------------------- resuming
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-epoch mlp run (plateau schedule) on 192 real Training faces, started from the command line."""
    pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")
    root = tmp_path_factory.mktemp("resume")
    data = small_csv(root / "tiny.csv", {"Training": 192, "PublicTest": 96}, seed=5)
    recipe = root / "recipe.json"
    recipe.write_text(json.dumps({"model": "mlp", "batch_size": 64, "epochs": 1}))
    args = ["train", str(data), "--config", str(recipe), "--threads", "1", "-o", str(root / "run")]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "data": data, "recipe": recipe, "run": root / "run", "argv": ["ferkit", *args]}


def _epochs(run: Path) -> list[str]:
    return [row.split(",")[0] for row in (run / "history.csv").read_text().splitlines()[1:]]


def test_the_card_copies_the_command_as_given(tiny):
    from ferkit.train.provenance import training_info

    info = training_info(tiny["run"])
    assert info["command"] == shlex.join(tiny["argv"]) and info["argv"] == tiny["argv"]
    assert info["recipe"] == {"file": str(tiny["recipe"]), "settings": {"model": "mlp", "batch_size": 64, "epochs": 1}}
    assert info["config"]["model"] == "mlp" and info["config"]["threads"] == 1


def test_a_moved_run_resumes_in_place_with_more_epochs(tiny, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny["run"], moved)
    r = run_cli("train", tiny["data"], "--epochs", "2", "-o", moved, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed" in r.stderr and "--epochs 2 (the run has 1)" in r.stderr
    assert _epochs(moved) == ["1", "2"] and _epochs(tiny["run"]) == ["1"]  # the original is untouched
    cfg = json.loads((moved / "config.json").read_text())
    assert cfg["out"] == str(moved) and cfg["epochs"] == 2
    record = json.loads((moved / "command.json").read_text())
    assert record["resumed_with"][0]["changes"] == ["--epochs 2 (the run has 1)"]


def test_resume_refuses_settings_that_would_make_another_run(tiny, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny["run"], moved)
    r = run_cli("train", tiny["data"], "--lr", "0.1", "--model", "seed-cnn-small", "-o", moved, "--resume")
    assert_one_line_error(r, "--resume", "--lr 0.1 (the run has 0.0005)", "--model seed-cnn-small")
    assert _epochs(moved) == ["1"]
    cfg = json.loads((moved / "config.json").read_text())
    cfg["schedule"] = "onecycle"  # a schedule laid out over --epochs cannot take more of them
    (moved / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_cli("train", tiny["data"], "--epochs", "3", "-o", moved, "--resume"),
                          "--epochs 3", "onecycle")
    # the recipe counts as asked for: the same recipe resumes, an edited one is refused
    r = run_cli("train", tiny["data"], "--config", tiny["recipe"], "-o", tiny["run"], "--resume")
    assert r.returncode == 0 and "resumed" in r.stderr, r.stderr[-3000:]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"model": "mlp", "batch_size": 32, "epochs": 1}))
    assert_one_line_error(run_cli("train", tiny["data"], "--config", edited, "-o", tiny["run"], "--resume"),
                          "--batch-size 32 (the run has 64)")


# ----------------------------------------------------------------------------- the option added in one line
def test_grad_clip_bounds_the_first_step(tiny, tmp_path):
    """One SGD step (Nesterov, momentum 0.9: the step is 1.9 x lr x gradient) from the same start: with
    --grad-clip C the weights move by at most 1.9 x lr x C; without it, by far more."""
    import torch
    from safetensors.torch import load_file

    from ferkit.train.loop import train

    def moved_by(**kw) -> float:
        out = tmp_path / "-".join(f"{k}{v}" for k, v in kw.items())
        cfg = TrainConfig(data=str(tiny["data"]), model="mlp", epochs=1, batch_size=192, optimizer="sgd",
                          schedule="none", threads=1, seed=3, flip=False, rotation=0, shift=0, zoom=0,
                          out=str(out), **kw)
        train(cfg, progress=False)
        return load_file(str(out / "last.safetensors"))

    start, clipped, free = moved_by(lr=0.0), moved_by(lr=1.0, grad_clip=1e-3), moved_by(lr=1.0)
    params = [k for k in start if k.startswith("model.") and not k.endswith(("running_mean", "running_var",
                                                                               "num_batches_tracked"))]

    def norm(state) -> float:
        return float(torch.sqrt(sum(((state[k] - start[k]).double() ** 2).sum() for k in params)))

    assert 0 < norm(clipped) <= 1.9 * 1e-3 * (1 + 1e-4)
    assert norm(free) > 100 * norm(clipped)


# ----------------------------------------------------------------------------- missing extras
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
from ferkit.apps.cli import main
sys.argv = ["ferkit", *{args!r}]
main()
"""


@pytest.mark.parametrize("blocked, args, extra", [
    (["torch"], ["train", "{data}", "-o", "{out}"], "train"),
    (["torch"], ["models"], "train"),
    (["torch"], ["summary", "seed-cnn"], "train"),
    (["torch"], ["export", "{out}", "--name", "x", "-o", "{out}"], "train"),
    (["sklearn"], ["evaluate", "fer2013-7", "{out}/no-such-data"], "eval"),
])
def test_a_missing_extra_is_one_line_before_any_work(tmp_path, blocked, args, extra):
    out = tmp_path / "run"
    args = [a.format(data=tmp_path / "no-such-data.csv", out=out) for a in args]
    r = subprocess.run([sys.executable, "-c", BLOCK.format(blocked=blocked, args=args)], capture_output=True,
                       text=True)
    assert_one_line_error(r, f"pip install 'ferkit[{extra}]'")
    assert not out.exists()

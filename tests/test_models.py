"""The model registry: exact parameter counts, JSON round trips, output shapes, and `ferkit summary`."""

from __future__ import annotations

import json
import subprocess

import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from ferkit.models import count_parameters, create_model, list_models, load_architecture, save_architecture  # noqa: E402

from conftest import FERKIT  # noqa: E402  (one definition of how tests call the CLI)
REGISTERED = ["fer-fast", "fer-resnet", "fer-resnet-s", "fer-vgg", "mlp", "seed-cnn", "seed-cnn-small"]


def test_registry_names():
    assert set(REGISTERED) <= set(list_models())


def test_seed_cnn_has_the_tutorials_parameter_count():
    model = create_model("seed-cnn", num_classes=7)
    assert count_parameters(model) == 4_474_759
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_parameters(model) + bn_stats == 4_478_727  # what Keras prints, moving statistics included


def test_seed_cnn_small_is_about_1_3_million():
    assert 1.2e6 < count_parameters(create_model("seed-cnn-small", 7)) < 1.4e6


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("classes", [7, 8])
def test_every_model_rebuilds_from_json_and_gives_logits(name, classes, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes).eval()
    save_architecture(model, tmp_path / "model.json", classes=[f"c{i}" for i in range(classes)])
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == name and spec["num_classes"] == classes
    rebuilt, spec2 = load_architecture(tmp_path / "model.json")
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert count_parameters(rebuilt) == count_parameters(model)
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        out = rebuilt(x)
        assert out.shape == (3, classes)
        assert torch.equal(out, model(x))
    assert spec2["classes"] == [f"c{i}" for i in range(classes)]


def test_model_kwargs_round_trip_through_json(tmp_path):
    model = create_model("fer-vgg", num_classes=7, widths=[32, 64, 96, 128], dropout=0.1)
    save_architecture(model, tmp_path / "m.json")
    rebuilt, _ = load_architecture(tmp_path / "m.json")
    assert count_parameters(rebuilt) == count_parameters(model)


def test_fer_fast_depths_and_widths_size_the_net(tmp_path):
    """The shipped fast tier's weights load key for key into the layout its card's recipe names (and not into
    the smaller default); depths add convs a stage."""
    from safetensors.torch import load_file

    from ferkit.errors import ConfigError
    from ferkit.modelcard import ModelCard
    from ferkit.runtime.model import resolve_model_path

    path = resolve_model_path("fast")
    shipped = load_file(path.with_suffix(".safetensors"))
    kwargs = ModelCard.load(path.with_suffix(".json")).training["recipe"]["settings"]["model_kwargs"]
    create_model("fer-fast", num_classes=7, **kwargs).load_state_dict(shipped, strict=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        create_model("fer-fast", num_classes=7).load_state_dict(shipped, strict=True)
    assert count_parameters(create_model("fer-fast", num_classes=7)) == 431_607
    larger = create_model("fer-fast", num_classes=7, widths=[24, 48, 96, 192, 320], depths=[1, 1, 2, 2, 1])
    convs = [m for m in larger.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 1, 2, 1, 2] and convs[-1].out_channels == 320
    assert count_parameters(larger) == 1_189_807
    save_architecture(larger, tmp_path / "m.json")
    assert count_parameters(load_architecture(tmp_path / "m.json")[0]) == 1_189_807
    with pytest.raises(ConfigError, match="depths needs 5 entries of at least 1"):
        create_model("fer-fast", depths=[1, 1, 0, 1, 1])


def test_fer_fast_drop_conv_keeps_every_other_layer(tmp_path):
    """Dropping the second conv of the 6-pixel stage: the shorter net loads the result key for key, and a
    face through it equals the long net's layers run without that block."""
    from ferkit.errors import ConfigError
    from ferkit.models.fast import drop_conv

    torch.manual_seed(0)
    widths = [24, 48, 96, 192, 320]
    long = create_model("fer-fast", num_classes=7, widths=widths, depths=[1, 1, 2, 2, 1]).eval()
    tensors, depths = drop_conv(long.state_dict(), [1, 1, 2, 2, 1], 3)
    assert depths == [1, 1, 2, 1, 1]
    short = create_model("fer-fast", num_classes=7, widths=widths, depths=depths).eval()
    short.load_state_dict(tensors, strict=True)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        expected = torch.nn.Sequential(*[m for i, m in enumerate(long) if i // 3 != 5])(x)
        assert torch.allclose(short(x), expected)
    with pytest.raises(ConfigError, match="stage 1 has no conv to drop"):
        drop_conv(long.state_dict(), [1, 1, 2, 2, 1], 1)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'nope'.*seed-cnn"):
        create_model("nope")


# ----------------------------------------------------------------------------- ferkit summary
def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FERKIT, *args], capture_output=True, text=True, timeout=timeout)


def test_summary_prints_the_keras_table_and_draws_the_architecture(tmp_path):
    png = tmp_path / "seed-cnn.png"
    r = run_cli("summary", "seed-cnn", "--png", str(png))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Layer (type)" in out and "Output Shape" in out and "Param #" in out
    assert "conv2d_1 (Conv2d)" in out and "(None, 128, 24, 24)" in out and "204,928" in out
    assert "Total params: 4,474,759" in out
    assert "Trainable params: 4,474,759" in out
    assert "Non-trainable params: 0" in out
    assert "4,478,727" in out  # the Keras figure, BN moving statistics included
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 600 and img.shape[1] > 600


def test_summary_json_and_class_count():
    from ferkit.train.summary import as_dict, summarize

    s = as_dict(summarize(create_model("fer-resnet-s", 8)))
    assert s["num_classes"] == 8 and s["layers"][-1]["output_shape"] == [8]
    assert s["total_params"] == sum(layer["params"] for layer in s["layers"])
    assert any(layer["type"] == "BasicBlock" and "residual" in layer["details"] for layer in s["layers"])
    assert s["mult_adds"] > 100e6


def test_summary_of_a_run_folder(tmp_path):
    model = create_model("mlp", num_classes=4)
    save_architecture(model, tmp_path / "model.json", classes=["happy", "sad", "neutral", "surprise"])
    r = run_cli("summary", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["num_classes"] == 4 and data["total_params"] == count_parameters(model)


@pytest.mark.parametrize("args, message", [
    (["summary", "resnet-9000"], "neither a registered model"),
    (["summary", "seed-cnn", "--classes", "1"], "at least 2 classes"),
])
def test_summary_bad_input_is_one_line(args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

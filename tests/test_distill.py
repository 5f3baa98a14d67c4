"""Distillation (`train --teacher`, repeatable): the teachers' mean probabilities (face and mirror) on the
training faces are cached in the run folder and blended into each head's targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from _fer_small import assert_one_line_error, run_cli, small_csv, small_csv_with_votes  # noqa: E402

JOINT = ("--model", "seed-cnn-small", "--batch-size", "32", "--lr", "2e-3", "--threads", "1")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two joint seed-cnn-small runs (different seeds) on 600 real faces with FER2013 labels and FER+ votes."""
    root = tmp_path_factory.mktemp("distill")
    data, votes = small_csv_with_votes(root, {"Training": 600, "PublicTest": 200}, seed=5)
    runs = []
    for seed in (1, 2):
        run = root / f"teacher{seed}"
        r = run_cli("train", data, "--aux-ferplus", votes, *JOINT, "--epochs", "1", "--seed", seed, "-o", run)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(run)
    return {"root": root, "data": data, "votes": votes, "runs": runs}


def teacher_mean(runs, images):
    """What the cache should hold, computed here from the teachers' own weights in fp32."""
    from ferkit.models import load_architecture
    from ferkit.preprocessing import normalize
    from ferkit.train.checkpoint import load_weights

    x = torch.from_numpy(normalize(images))
    total = 0
    for run in runs:
        model, _ = load_architecture(run / "model.json")
        load_weights(model, run / "best.safetensors")
        model.eval()
        with torch.no_grad():
            p = [torch.cat([o[:, :7].softmax(1), o[:, 7:].softmax(1)], 1) for o in (model(x), model(x.flip(3)))]
        total = total + (p[0] + p[1]) / 2
    return total / len(runs)


def test_cached_teacher_probabilities_are_the_teachers_mean(teachers):
    from safetensors.torch import load_file

    from ferkit.data import load_dataset

    student = teachers["root"] / "student"
    r = run_cli("train", teachers["data"], "--aux-ferplus", teachers["votes"], *JOINT, "--epochs", "1",
                *[a for run in teachers["runs"] for a in ("--teacher", run)], "--distill-weight", "0.7",
                "--precision", "fp32", "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("teacher ") == 2
    cached = load_file(str(student / "teacher-probs.safetensors"))["probs"]
    train_faces = load_dataset(teachers["data"]).split("Training").images
    assert cached.shape == (len(train_faces), 15)
    torch.testing.assert_close(cached, teacher_mean(teachers["runs"], train_faces), atol=1e-4, rtol=0)

    # resuming with the same teachers reuses the cache; a changed list recomputes it
    r = run_cli("train", teachers["data"], "--resume", "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "teacher 1/" not in r.stderr
    cfg_path = student / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["teachers"] = [str(teachers["runs"][0])]
    cfg["epochs"] = 2
    cfg_path.write_text(json.dumps(cfg))
    r = run_cli("train", teachers["data"], "--resume", "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("teacher ") == 1
    again = load_file(str(student / "teacher-probs.safetensors"))["probs"]
    torch.testing.assert_close(again, teacher_mean(teachers["runs"][:1], train_faces), atol=1e-4, rtol=0)


def test_blend_mixes_each_head_and_leaves_faces_without_votes_alone(teachers):
    """Per head: (1 - w) * labels + w * teachers, still a distribution; a face without FER+ votes keeps an
    empty FER+ target (so the FER+ head never learns from the teachers alone)."""
    from ferkit.data import load_dataset
    from ferkit.data.ferplus import ferplus_targets
    from ferkit.train.distill import blend_targets

    faces = load_dataset(teachers["data"]).split("Training")
    soft, _ = ferplus_targets(faces.ids, teachers["votes"])
    labels = torch.nn.functional.one_hot(torch.from_numpy(faces.labels), 7).float()
    y = torch.cat([labels, torch.from_numpy(soft)], 1)
    t = teacher_mean(teachers["runs"], faces.images)
    no_votes = soft.sum(1) == 0
    assert no_votes.any() and (~no_votes).any()  # real FER+ rows of both kinds, so both branches are tested
    out = blend_targets(y, t, 0.3, [7, 8])
    torch.testing.assert_close(out[:, :7], 0.7 * labels + 0.3 * t[:, :7])
    torch.testing.assert_close(out[~no_votes, 7:], 0.7 * y[~no_votes, 7:] + 0.3 * t[~no_votes, 7:])
    assert float(out[no_votes, 7:].abs().sum()) == 0.0
    np.testing.assert_allclose(out[~no_votes].sum(1).numpy(), 2.0, atol=1e-5)
    with pytest.raises(ValueError, match="distill-weight"):
        blend_targets(y, t, 1.5, [7, 8])


def test_a_teacher_of_another_shape_is_a_one_line_error(teachers, tmp_path):
    """A 7-class run cannot teach a joint (15-output) student: the error names the teacher file."""
    data7 = small_csv(tmp_path / "d7.csv", {"Training": 200, "PublicTest": 64}, seed=3)
    seven = tmp_path / "seven"
    r = run_cli("train", data7, *JOINT, "--epochs", "1", "-o", seven)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("train", teachers["data"], "--aux-ferplus", teachers["votes"], *JOINT, "--epochs", "1",
                "--teacher", seven, "-o", tmp_path / "student")
    assert_one_line_error(r, "--teacher", "best.safetensors", "does not fit")
    r = run_cli("train", teachers["data"], *JOINT, "--epochs", "1", "--teacher", tmp_path / "nowhere.safetensors",
                "-o", tmp_path / "student2")
    assert_one_line_error(r, "--teacher", "nowhere.safetensors")
    r = run_cli("train", teachers["data"], *JOINT, "--epochs", "1", "--teacher", seven, "--distill-weight", "1.5",
                "-o", tmp_path / "student3")
    assert_one_line_error(r, "--distill-weight", "1.5")
    assert "teacher 1/" not in r.stderr  # refused before the teachers' pass


def test_the_card_of_a_distilled_model_names_its_teachers(teachers):
    """The exported card's command repeats --teacher, and each teacher's own command and time are recorded."""
    from ferkit.modelcard import ModelCard

    student = teachers["root"] / "student-card"
    r = run_cli("train", teachers["data"], "--aux-ferplus", teachers["votes"], *JOINT, "--epochs", "1",
                *[a for run in teachers["runs"] for a in ("--teacher", run)], "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("export", student, "--name", "kd", "--head", "ferplus", "-o", teachers["root"] / "ship", "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    training = ModelCard.load(teachers["root"] / "ship" / "kd.json").training
    assert training["command"].count("--teacher ") == 2 and training["distill_weight"] == 0.5
    assert [t["weights"] for t in training["teachers"]] == [str(run) for run in teachers["runs"]]
    assert all(t["epochs"] == 1 and t["wall_seconds"] > 0 and "--seed" in t["command"] for t in training["teachers"])


def test_a_shipped_onnx_model_teaches_another_architecture(tmp_path):
    """`--teacher fer2013-7`: the run time's probabilities (the card's TTA, no prior correction) become the
    cached targets of a fer-fast student; the card records the teacher by name with its own recipe."""
    from safetensors.torch import load_file

    from ferkit.data import load_dataset
    from ferkit.modelcard import ModelCard
    from ferkit.runtime.model import FacialExpressionModel

    data = small_csv(tmp_path / "d.csv", {"Training": 96, "PublicTest": 64}, seed=4)
    student = tmp_path / "student"
    r = run_cli("train", data, "--model", "fer-fast", "--teacher", "fer2013-7", "--distill-weight", "1.0",
                "--epochs", "1", "--batch-size", "32", "--threads", "1", "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    faces = load_dataset(data).split("Training").images
    cached = load_file(str(student / "teacher-probs.safetensors"))["probs"].numpy()
    teacher = FacialExpressionModel("fer2013-7", prior_correction=False)
    np.testing.assert_allclose(cached, teacher.predict_proba(faces), atol=1e-5)
    assert teacher.tta == "multi" and not np.allclose(cached, teacher.card.adjust(cached), atol=1e-3)  # uncorrected
    r = run_cli("export", student, "--name", "kd-fast", "-o", tmp_path / "ship", "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    training = ModelCard.load(tmp_path / "ship" / "kd-fast.json").training
    assert [t["weights"] for t in training["teachers"]] == ["fer2013-7"]
    assert "command" in training["teachers"][0]  # the shipped model's own recipe, read from its card


def test_an_onnx_teacher_with_other_classes_is_a_one_line_error(tmp_path):
    data = small_csv(tmp_path / "d.csv", {"Training": 64, "PublicTest": 32}, seed=4)
    r = run_cli("train", data, "--model", "fer-fast", "--teacher", "ferplus-8", "--epochs", "1", "-o", tmp_path / "s")
    assert_one_line_error(r, "--teacher", "ferplus-8", "classes")


def test_online_teachers_answer_on_the_batch_as_the_student_sees_it():
    """`--teacher-online`: the teacher runs on the normalised training batch itself; on plain faces that is the
    run time's one-view answer without prior correction, and on a mixed batch the answer to the mixed pixels."""
    from _fer_small import real_faces

    from ferkit.preprocessing import normalize
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.train.distill import OnlineTeachers
    from ferkit.train.run import plain_heads

    faces = real_faces().split("PublicTest").images[:64]
    online = OnlineTeachers(["fer2013-7"], plain_heads(("angry", "disgust", "fear", "happy", "sad", "surprise",
                                                         "neutral")))
    x = torch.from_numpy(normalize(faces)).contiguous(memory_format=torch.channels_last)
    runtime = FacialExpressionModel("fer2013-7", tta="none", prior_correction=False, precision=online.models[0].precision)
    np.testing.assert_allclose(online(x).numpy(), runtime.predict_proba(faces), atol=1e-5)
    mixed = 0.6 * x + 0.4 * x.flip(0)  # not a uint8 face any more: the network input itself is the reference
    assert (runtime.mean, runtime.std) == (0.5077, 0.2552)  # the card normalises as training does
    direct = runtime.session.run(["probabilities"], {"faces": mixed.contiguous().numpy()})[0]
    np.testing.assert_allclose(online(mixed).numpy(), direct, atol=1e-5)
    assert not np.allclose(online(mixed).numpy(), online(x).numpy(), atol=0.05)


def test_an_online_teacher_trains_a_student_without_a_cache(tmp_path):
    data = small_csv(tmp_path / "d.csv", {"Training": 96, "PublicTest": 64}, seed=4)
    student = tmp_path / "student"
    r = run_cli("train", data, "--model", "fer-fast", "--teacher", "fer2013-7", "--teacher-online", "--corrupt", "0.5",
                "--mixup", "0.2", "--epochs", "1", "--batch-size", "32", "--threads", "1", "-o", student)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "online teacher: fer2013-7" in r.stderr
    assert not (student / "teacher-probs.safetensors").exists()
    assert json.loads((student / "config.json").read_text())["teacher_online"] is True


def test_an_online_teacher_must_be_a_finished_onnx_model(teachers, tmp_path):
    r = run_cli("train", teachers["data"], "--model", "seed-cnn-small", "--teacher-online", "--epochs", "1",
                "-o", tmp_path / "a")
    assert_one_line_error(r, "--teacher-online", "--teacher")
    r = run_cli("train", teachers["data"], "--model", "seed-cnn-small", "--teacher", teachers["runs"][0],
                "--teacher-online", "--epochs", "1", "-o", tmp_path / "b")
    assert_one_line_error(r, "--teacher-online", "ONNX")

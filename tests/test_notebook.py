"""notebooks/walkthrough.ipynb: committed unexecuted, exactly as notebooks/make_walkthrough.py writes it, and it
runs from top to bottom on the real data in a real Jupyter kernel (nbclient), drawing what it says it draws."""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"

nbformat = pytest.importorskip("nbformat", reason="nbformat missing: pip install -e '.[test]'")


def load_builder():
    spec = importlib.util.spec_from_file_location("make_walkthrough", ROOT / "notebooks" / "make_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebook_is_the_generated_one_and_unexecuted():
    committed = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(committed)
    built = load_builder().build()
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], \
        "notebooks/walkthrough.ipynb is stale: run python notebooks/make_walkthrough.py"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def _pngs(cell) -> list[bytes]:
    out = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if "image/png" in data:
            out.append(base64.b64decode(data["image/png"]))
    return out


def _text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_walkthrough_runs_on_the_real_data(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("nbclient", reason="nbclient missing: pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="ipykernel missing: pip install -e '.[test]'")
    pytest.importorskip("torch", reason="the training step needs torch: make install-dev")
    from nbclient import NotebookClient

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    monkeypatch.setenv("FERKIT_DATA", str(data_dir))  # the kernel inherits this process's environment
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # no time limit per cell beyond a generous one: a busy CI machine is slow, and a hung kernel still ends
    NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.get("output_type") != "error" for c in code for o in c.outputs)
    assert all(c.execution_count for c in code)  # every code cell ran

    def cell_with(fragment: str):
        (cell,) = [c for c in code if fragment in c.source]
        return cell

    assert "ferkit " in _text(cell_with("print(\"ferkit\""))
    assert _pngs(cell_with("face_grid(")), "the face grid is shown"
    assert _pngs(cell_with("Class balance per split")), "the class-balance chart is drawn"
    training = cell_with("train(cfg, resume=True")
    assert _pngs(training), "the learning curves are drawn"
    assert "val_acc" in _text(training)
    evaluation = cell_with("evaluate_faces(")
    assert "our small net:" in _text(evaluation) and "shipped fer2013-7" in _text(evaluation)
    assert _pngs(evaluation), "the confusion matrix is shown"
    photo = cell_with("results_to_frame(found)")
    assert "happy" in _text(photo) and len(_pngs(photo)) == 2  # the annotated photo and the bar chart
    video = cell_with("process_video(clip")
    assert "face track" in _text(video)
    assert _pngs(cell_with("Emotions over time")), "the emotion timeline is plotted"
    out = tmp_path / "walkthrough-out"
    assert (out / "run" / "best.safetensors").is_file() and (out / "confusion.png").is_file()
    assert any((out / "clip_ferkit").glob("clip.annotated.*")) and (out / "clip_ferkit" / "clip.csv").is_file()

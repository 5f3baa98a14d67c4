"""A real `ferkit serve` against hostile and careless clients: slow and stalled connections, bodies that
are too large or cut off, a full disk, foreign web pages, a server killed without clean-up, a busy port.

Every time the server must answer with a short JSON error (or close a connection that wastes a slot),
keep serving everyone else, keep its memory bounded, and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _runtime_media import astronaut_bgr, encode, truncated_copy, write_video
from _web_server import FERKIT, Server, free_port, web_deps_or_skip

web_deps_or_skip()
import httpx  # noqa: E402

MB = 1024 * 1024
CLIENT_TIMEOUT = 2  # the server's --client-timeout here


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("abuse-media")
    write_video(d / "clip.mp4", n=8, fps=8)
    return d


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    srv = Server("--client-timeout", str(CLIENT_TIMEOUT), "--max-connections", "20", "--max-upload-mb", "2",
                 "--max-video-mb", "200", "--media-dir", str(media), "--log-level", "info",
                 tmp=tmp_path_factory.mktemp("abuse-server"))
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log() and "bug in ferkit" not in srv.log(), srv.log()
    assert srv.work_dirs() == [], "the server left its work folder behind"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def astronaut_jpg() -> bytes:
    return encode(astronaut_bgr(), ".jpg")


def assert_error(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail", "status"} and "\n" not in body["detail"], body
    for w in words:
        assert w.lower() in body["detail"].lower(), body
    return body


def raw_request(server, head: bytes, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(head + body)
    return s


def read_all(s: socket.socket, timeout: float = 30) -> bytes:
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def wait_for_log(server, text: str, timeout: float = 20) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in server.log():
            return server.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log()}")


# -- what every answer carries --------------------------------------------------------------------------
def test_security_headers_on_every_answer(server, client, astronaut_jpg):
    answers = [client.get(p) for p in ("/", "/api/v1/healthz", "/static/app.js", "/openapi.json", "/docs",
                                       "/api/v1/nothing-here", "/api/v1/videos/not-an-id")]
    answers.append(client.post("/api/v1/predict", content=b"not an image"))
    answers.append(client.post("/api/v1/predict", content=astronaut_jpg))
    for r in answers:
        h = r.headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY", (r.url, h)
        assert h["referrer-policy"] == "no-referrer", (r.url, h)
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 404, 422, 415, 200]


def test_foreign_pages_cannot_use_live_or_stream(server, client):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = "/api/v1/stream?source=clip.mp4&frames=1"
    r = client.get(url, headers={"Origin": "http://evil.example"})
    assert_error(r, 403, "http://evil.example", "--allow-origin")
    own = f"http://127.0.0.1:{server.port}"
    for headers in ({"Origin": own}, {}):  # the server's own page, and a client that is no browser
        with client.stream("GET", url, headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/x-mixed-replace")
            r.read()
    ws_url = server.url.replace("http", "ws") + "/api/v1/live"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, origin="http://evil.example", open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(ws_url, origin=own, open_timeout=30) as ws:
        ws.send("ping")
        assert json.loads(ws.recv(timeout=30)) == {"pong": True}


# -- slow clients -----------------------------------------------------------------------------------------
def test_slow_clients_are_cut_off_and_others_are_still_served(server, client, astronaut_jpg):
    """30 clients that trickle their headers or their body hold more connections than the server allows
    (20): the good requests that come meanwhile are served, and every trickler is cut off."""
    stop = threading.Event()
    heads = [raw_request(server, b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(15)]
    bodies = [raw_request(server, b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: 500000\r\n\r\n", b"\xff\xd8\xff") for _ in range(15)]

    def trickle():
        while not stop.wait(0.3):
            for s in heads + bodies:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.6)
        served = []
        for _ in range(6):  # each on a fresh connection, as new visitors come
            with httpx.Client(base_url=server.url, timeout=60) as fresh:
                served.append(fresh.get("/api/v1/healthz").status_code)
                served.append(fresh.post("/api/v1/predict", content=astronaut_jpg).status_code)
        assert served == [200] * 12, served
    finally:
        stop.set()
        t.join()
    answers = [read_all(s, timeout=CLIENT_TIMEOUT + 20) for s in heads + bodies]  # closed by the server, not us
    for s in heads + bodies:
        s.close()
    # each was closed, after a 408 (too slow) or a 503 (no room left when its request came), or at once
    firsts = [a.split(b"\r\n")[0] for a in answers]
    assert all(a == b"" or a.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 ")) for a in firsts), firsts
    assert b"HTTP/1.1 408 Request Timeout" in firsts[:15] and b"HTTP/1.1 408 Request Timeout" in firsts[15:], firsts
    for a in answers[15:]:
        if a.startswith(b"HTTP/1.1 408 "):  # cut off by the upload-rate rule, with its reason
            assert b"the request body arrived too slowly" in a, a
    log = server.log()
    assert "sent no complete request" in log or "closing a stalled connection" in log, log
    assert client.get("/api/v1/healthz").status_code == 200


def test_announced_oversized_body_is_refused_before_it_is_sent(server):
    s = raw_request(server, b"POST /api/v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n")
    t0 = time.monotonic()
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413 ") and b"10,240 MB is larger than the limit of 200 MB" in answer, answer
    assert time.monotonic() - t0 < 20  # answered from the headers: not one byte of the 10 GB was waited for


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_raw_uploads_are_streamed_to_disk_not_held_in_memory(server, client, media):
    """Three 60 MB raw-body video uploads at once: the server's memory grows by far less than one of them."""
    ok = client.post("/api/v1/videos", content=(media / "clip.mp4").read_bytes())  # warm up the decoders
    assert ok.status_code == 202, ok.text
    base = _rss_kb(server.proc.pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_kb(server.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    big = b"\x00\x00\x00\x18ftypmp42" + bytes(60 * MB)  # an MP4 header and nothing playable: refused after the upload
    results = []

    def upload():
        with httpx.Client(base_url=server.url, timeout=120) as c:
            results.append(c.post("/api/v1/videos", content=big).status_code)

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    assert results == [422] * 3, results
    grew_mb = (peak[0] - base) / 1024
    assert grew_mb < 100, f"the server's memory grew by {grew_mb:.0f} MB for 3 x 60 MB uploads"


def test_a_client_that_hangs_up_mid_upload_is_one_info_line(server, client):
    for path in ("/api/v1/predict", "/api/v1/videos"):
        s = raw_request(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".encode(),
                        b"\x00" * 200_000)
        time.sleep(0.3)
        s.close()
        log = wait_for_log(server, f"disconnected during POST {path}")
        assert sum(f"disconnected during POST {path}" in line for line in log.splitlines()) == 1, log
    assert "Traceback" not in server.log() and "bug in ferkit" not in server.log(), server.log()
    assert client.get("/api/v1/healthz").status_code == 200


# -- video jobs -----------------------------------------------------------------------------------------------
def test_a_video_that_ends_early_warns_and_no_server_path_is_shown(server, client, tmp_path):
    avi = write_video(tmp_path / "clip.avi", n=30, fps=15, fourcc="MJPG")
    cut = truncated_copy(avi, tmp_path / "cut.avi", 0.5)
    r = client.post("/api/v1/videos", files={"file": ("cut.avi", cut.read_bytes())})
    assert r.status_code == 202, r.text
    end = time.monotonic() + 180
    while (job := client.get(r.json()["url"]).json())["status"] in ("queued", "running"):
        assert time.monotonic() < end, job
        time.sleep(0.3)
    assert job["status"] == "done", job
    warning = " ".join(job["warnings"])
    assert "cut.avi: ended early" in warning and "of the 30 frames" in warning, job
    assert job["result"]["frames"] < 30
    text = json.dumps(job)
    assert str(server.work_tmp) not in text and "ferkit-serve-" not in text, text


def test_worker_messages_are_checked_json():
    from ferkit.apps.web.worker import parse_message

    assert parse_message(b'{"progress": [3, 10]}\n') == {"progress": (3, 10)}
    assert parse_message(b"\x80\x04\x95garbage")["failed"].startswith("the worker process sent an unreadable")
    assert "unreadable" in parse_message(b'{"done": {"frames": "many"}}')["failed"]
    assert parse_message(b'{"failed": "clip.mp4: no video stream"}') == {"failed": "clip.mp4: no video stream"}


# -- the machine: disk, temp folder, port ----------------------------------------------------------------------
def _file_size_cap(limit: int):
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail (EFBIG), as on a full disk
    return cap


def test_killed_server_is_swept_and_a_full_disk_is_507(tmp_path):
    tmp = tmp_path / "machine"
    killed = Server(tmp=tmp)
    left = killed.work_dirs()
    assert len(left) == 1
    killed.kill()
    assert left[0].is_dir()  # SIGKILL: nothing cleaned up
    with Server("--max-upload-mb", "20", "--allow-origin", "http://app.example:3000", tmp=tmp,
                preexec_fn=_file_size_cap(3 * MB)) as srv:
        assert not left[0].exists(), "the dead server's work folder was not swept"
        assert len(srv.work_dirs()) == 1
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            jpeg_like = b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 5 * MB, np.uint8).tobytes()
            assert_error(c.post("/api/v1/predict", content=jpeg_like), 507, "no room")
            video_like = b"\x00\x00\x00\x18ftypmp42" + jpeg_like
            body = assert_error(c.post("/api/v1/videos", files={"file": ("big.mp4", video_like)}), 507, "no room")
            assert "/" not in body["detail"], body  # no server path
            assert c.post("/api/v1/predict", content=encode(astronaut_bgr(), ".jpg")).status_code == 200
        from websockets.sync.client import connect

        with connect(srv.url.replace("http", "ws") + "/api/v1/live", origin="http://app.example:3000",
                     open_timeout=30) as ws:  # an origin allowed with --allow-origin
            ws.send("ping")
            assert json.loads(ws.recv(timeout=30)) == {"pong": True}
        assert srv.alive()
    log = srv.log()
    assert "Traceback" not in log and "bug in ferkit" not in log, log
    assert srv.work_dirs() == []


def _ferkit(*args, timeout=120) -> subprocess.CompletedProcess:
    import sys

    cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def test_a_busy_port_is_one_line_before_anything_loads():
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        r = _ferkit("serve", "--port", str(port))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == f"error: port {port} is in use on 127.0.0.1 (another server?): stop it, or choose " \
                               "another port with --port", r.stderr
    assert "open http" not in r.stdout and "Traceback" not in r.stderr
    r = _ferkit("serve", "--port", str(free_port()), "--detect-size", "10")
    assert r.returncode == 2 and "--detect-size must be 0 (the full image) or at least 32" in r.stderr, r.stderr
    r = _ferkit("serve", "--port", str(free_port()), "--allow-origin", "evil.example")
    assert r.returncode == 2 and "--allow-origin 'evil.example'" in r.stderr, r.stderr

"""Every bad image and video of the corpus, uploaded to a real `ferkit serve` on 127.0.0.1: as a named
multipart file and as a raw body. Each must be a 4xx JSON error whose one-line detail names the file and
the fault (never a server path), and the server must answer /healthz afterwards.

Cases that cannot be uploaded (a FIFO, a folder, a missing file) or that are not an upload (a bad model
card: the server loads its model at start) are left to the CLI corpus.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from _web_server import Server, web_deps_or_skip

from bad_inputs.corpus import CASES, Case

web_deps_or_skip()
import httpx  # noqa: E402

PREDICT, VIDEOS = "/api/v1/predict", "/api/v1/videos"
# What the server answers for each case it takes: endpoint, status, and a regex of the detail. A case
# added to the corpus and not listed here is still posted, and must still be a one-line 4xx naming it.
EXPECTED: dict[str, tuple[str, int, str]] = {
    "empty image": (PREDICT, 400, r"empty \(0 bytes\)"),
    "truncated jpeg": (PREDICT, 422, r"starts like a JPEG but cannot be decoded \(truncated or corrupt\)"),
    "text named .png": (PREDICT, 415, r"this text is not an image in a format we read"),
    "HDR header bomb": (PREDICT, 413, r"100000x100000 pixels is over the limit of 40,000,000"),
    "PNG header bomb": (PREDICT, 413, r"over the limit of 40,000,000"),
    "TIFF header bomb": (PREDICT, 413, r"50000x50000 pixels is over the limit of 40,000,000"),
    "empty video": (VIDEOS, 400, r"empty \(0 bytes\)"),
    "text named .mp4": (VIDEOS, 415, r"not a video in a format we read"),
    "MP4 cut before its index": (VIDEOS, 422, r"not a readable video"),
    "no decodable frame": (VIDEOS, 422, r"no frame could be decoded"),
    "sound but no picture": (VIDEOS, 422, r"no video stream"),
    "16000x16000 frames": (VIDEOS, 413, r"16000x16000 frames are over the limit of 40,000,000 pixels"),
}
IMAGE_COMMANDS, VIDEO_COMMANDS = {"predict", "chart"}, {"video"}


def endpoint_of(case: Case) -> str | None:
    if case.role != "input":
        return None
    if IMAGE_COMMANDS & set(case.commands):
        return PREDICT
    if VIDEO_COMMANDS & set(case.commands):
        return VIDEOS
    return None


CASES_HERE = [c for c in CASES if endpoint_of(c)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server("--max-pixels", "40000000", tmp=tmp_path_factory.mktemp("corpus-server"))
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log() and "bug in ferkit" not in srv.log(), srv.log()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_every_listed_case_is_in_the_corpus():
    """The table above follows the corpus: a renamed or removed case shows here, not as a silent gap."""
    names = {c.name for c in CASES_HERE}
    assert set(EXPECTED) <= names, set(EXPECTED) - names


@pytest.mark.parametrize("case", CASES_HERE, ids=lambda c: c.name)
def test_bad_upload_is_a_4xx_naming_the_file(case: Case, server, client, tmp_path):
    bad = case.build(tmp_path)
    try:
        uploadable = stat.S_ISREG(bad.stat().st_mode)
    except FileNotFoundError:
        uploadable = False
    if not uploadable:
        pytest.skip(f"{bad.name}: not a regular file, so nothing a client could upload (the CLI corpus covers it)")
    data = Path(bad).read_bytes()
    path, status, pattern = EXPECTED.get(case.name, (endpoint_of(case), None, None))
    r = client.post(path, files={"file": (bad.name, data)})
    assert 400 <= r.status_code < 500 and (status is None or r.status_code == status), (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail", "status"} and body["status"] == r.status_code, body
    detail = body["detail"]
    assert "\n" not in detail and bad.name in detail, detail
    assert pattern is None or re.search(pattern, detail), (pattern, detail)
    assert str(server.work_tmp) not in detail and "ferkit-serve-" not in detail, detail  # no server path
    raw = client.post(path, content=data)  # the same bytes as a raw body: the same answer, minus the name
    assert raw.status_code == r.status_code, (raw.status_code, raw.text)
    assert "\n" not in raw.json()["detail"] and str(server.work_tmp) not in raw.json()["detail"], raw.text
    assert server.alive(), server.log()
    assert client.get("/api/v1/healthz").json()["status"] == "ok"

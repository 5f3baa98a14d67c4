"""A real browser on the page: headless Debian Chromium driven by Playwright, its fake camera fed a .y4m of
real faces. What a person sees is checked, not just the DOM: the probability bars have a drawn width in
proportion to their percentages, the label is painted over the live video, the chart and the annotated
video are not blank, and the page runs under its own Content-Security-Policy without a violation.
Screenshots are saved in pytest's tmp dir (FERKIT_SCREENSHOTS=DIR keeps copies; the result bars also go
to /tmp/ferkit-shots/bars.png).

Playwright's own browser download cannot work here, so the test uses /usr/bin/chromium (apt-get install
chromium; .ci/run does it) and skips, saying why, where it is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_media import astronaut_bgr, encode, two_faces_frame, write_video
from _web_server import Server, web_deps_or_skip

CHROMIUM = Path(os.environ.get("FERKIT_CHROMIUM", "/usr/bin/chromium"))
BARS_SHOT = Path("/tmp/ferkit-shots/bars.png")

web_deps_or_skip()
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (Playwright's browser download cannot be used here)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")

# Waits are arrow functions, not expression strings: Playwright polls a string with eval(), which the page's
# Content-Security-Policy (rightly) forbids.
# Counts WebSocket frames sent and answers received, to check the page never has two frames in flight.
WS_PROBE = """
(() => {
  const probe = window.__wsProbe = { sent: 0, received: 0, maxInFlight: 0 };
  const Native = window.WebSocket;
  const send = Native.prototype.send;
  Native.prototype.send = function (data) {
    probe.sent += 1;
    probe.maxInFlight = Math.max(probe.maxInFlight, probe.sent - probe.received);
    return send.call(this, data);
  };
  function Probed(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("message", () => { probe.received += 1; });
    return ws;
  }
  Probed.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Probed[k] = Native[k];
  window.WebSocket = Probed;
})();
"""


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """YUV4MPEG2 (4:2:0), what Chromium's --use-file-for-fake-video-capture reads."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for f in frames:
            fh.write(b"FRAME\n" + cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def keep(shot: Path) -> None:
    dest = os.environ.get("FERKIT_SCREENSHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(dest) / shot.name)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("browser-media")
    # Two real faces (the astronaut and her mirror image), drifting slowly: a webcam that sees two people.
    camera = [two_faces_frame(0.08 * (1 - np.cos(2 * np.pi * i / 30)) / 2) for i in range(30)]
    photo = d / "astronaut.jpg"
    photo.write_bytes(encode(astronaut_bgr(), ".jpg"))
    return {"y4m": write_y4m(d / "faces.y4m", camera), "photo": photo, "video": write_video(d / "two.mp4", n=12, fps=6)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp=tmp_path_factory.mktemp("browser-server")) as srv:
        yield srv
        assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture(scope="module")
def page(media, server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={media['y4m']}"])
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.add_init_script(WS_PROBE)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # a CSP violation is reported on the console; the page must satisfy its own policy
        pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        pg.goto(server.url + "/")
        pg.wait_for_function("() => document.getElementById('model-info').textContent.startsWith('model ')")
        pg.js_errors = errors
        yield pg
        browser.close()
    assert not errors, errors


def classes_of(page) -> list[str]:
    return page.evaluate("fetch('/api/v1/model').then(r => r.json()).then(m => m.classes)")


def test_photo_upload_shows_annotated_image_and_bars(page, media, shots):
    classes = classes_of(page)
    page.set_input_files("#photo-input", str(media["photo"]))
    page.wait_for_selector(".face-card h3", timeout=60_000)
    title = page.inner_text(".face-card h3")
    assert title.startswith("Face 1: ") and title.split()[2] in classes, title
    assert len(page.query_selector_all(".face-card .bar-row")) == len(classes)
    assert page.evaluate("document.getElementById('photo-annotated').naturalWidth") == 512
    assert "1 face in astronaut.jpg" in page.inner_text("#photo-status")
    page.wait_for_timeout(200)
    # the bars as drawn: each fill is as wide as its share of the track, and the label's is the widest
    face = page.evaluate("window.ferkitPhoto.faces[0]")
    rows = page.query_selector_all(".face-card .bar-row")
    drawn = {}
    for row in rows:
        name = row.query_selector(".name").inner_text()
        track, fill = row.query_selector(".bar-track").bounding_box(), row.query_selector(".bar-fill").bounding_box()
        assert track["width"] > 100 and track["height"] > 0, (name, track)
        drawn[name] = fill["width"] / track["width"]
        assert fill["height"] > 0 and fill["x"] == pytest.approx(track["x"], abs=1), (name, fill, track)
        assert fill["width"] == pytest.approx(face["probabilities"][name] * track["width"], abs=1.5), (name, fill, track)
    assert set(drawn) == set(classes)
    assert max(drawn, key=drawn.get) == face["label"] and drawn[face["label"]] > 0.3, drawn
    label_fill = page.query_selector_all(".face-card .bar-fill")[list(face["probabilities"]).index(face["label"])]
    fill_box = label_fill.bounding_box()
    assert fill_box["width"] > 50  # a bar a person sees, not a sliver
    colour = [int(v) for v in label_fill.evaluate("e => getComputedStyle(e).backgroundColor")[4:-1].split(",")[:3]]
    shot = shots / "photo.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot)
    BARS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#photo-faces").screenshot(path=str(shots / "bars.png"))
    shutil.copy(shots / "bars.png", BARS_SHOT)
    # and in the pixels of the screenshot: the label's colour covers (about) the bar's drawn area
    png = cv2.imread(str(shots / "bars.png"))
    near = np.abs(png.astype(int) - np.array(colour[::-1])).max(axis=2) <= 40
    assert near.sum() >= 0.8 * fill_box["width"] * fill_box["height"], (near.sum(), fill_box, colour)


def test_live_camera_labels_faces_over_the_video(page, shots):
    classes = classes_of(page)
    page.click("#tab-live")
    page.click("#camera-start")
    page.wait_for_function("() => window.ferkitLive.frames >= 4 && window.ferkitLive.lastFaces.length >= 1", timeout=90_000)
    live = page.evaluate("({frames: ferkitLive.frames, fps: ferkitLive.fps, labels: ferkitLive.lastFaces.map(f => f.label),"
                         " boxes: ferkitLive.lastFaces.map(f => f.box)})")
    assert set(live["labels"]) <= set(classes) and live["fps"] > 0, live
    chips = page.inner_text("#live-faces")
    assert any(c in chips for c in classes), chips
    assert "FPS" in page.inner_text("#live-fps")
    # the labels are drawn on the canvas over the video, where the faces are
    covered = page.evaluate("""() => {
        const c = document.getElementById('live-overlay'), v = document.getElementById('live-video');
        const r = c.getBoundingClientRect(), rv = v.getBoundingClientRect();
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
        return {painted: n, over: Math.abs(r.left - rv.left) < 2 && Math.abs(r.top - rv.top) < 2
                && Math.abs(r.width - rv.width) < 2 && Math.abs(r.height - rv.height) < 2};
    }""")
    assert covered["painted"] > 500 and covered["over"], covered
    probe = page.evaluate("window.__wsProbe")
    assert probe["sent"] >= 4 and probe["maxInFlight"] == 1, probe  # never more than one frame in flight
    page.wait_for_timeout(300)
    shot = shots / "live.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot)
    page.click("#camera-stop")
    assert page.evaluate("window.ferkitLive.running") is False


def test_video_upload_plays_annotated_video_with_chart(page, media, shots):
    page.click("#tab-video")
    page.set_input_files("#video-input", str(media["video"]))
    page.wait_for_function("() => window.ferkitVideo && ['done', 'failed'].includes(window.ferkitVideo.status)", timeout=120_000)
    job = page.evaluate("window.ferkitVideo")
    assert job["status"] == "done", job
    page.wait_for_function("() => document.getElementById('video-player').readyState >= 2", timeout=30_000)
    page.wait_for_function("() => document.getElementById('video-plot').naturalWidth > 0", timeout=30_000)
    assert page.evaluate("document.getElementById('video-player').videoWidth") == 640
    assert page.get_attribute("#video-csv", "href").endswith("/files/csv?download=true")
    assert "done: 12 frames" in page.inner_text("#video-status")
    # what is on screen: the chart has lines in several colours, the playing video a picture, not blank
    seen = page.evaluate("""() => {
        const stats = (el, w, h) => {
            const c = document.createElement('canvas'); c.width = w; c.height = h;
            const ctx = c.getContext('2d'); ctx.drawImage(el, 0, 0, w, h);
            const px = ctx.getImageData(0, 0, w, h).data, colours = new Set();
            let ink = 0;
            for (let i = 0; i < px.length; i += 4) {
                if (px[i] < 235 || px[i + 1] < 235 || px[i + 2] < 235) ink++;
                colours.add((px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | (px[i + 2] >> 4));
            }
            return {ink: ink / (w * h), colours: colours.size};
        };
        const plot = document.getElementById('video-plot'), video = document.getElementById('video-player');
        const r = plot.getBoundingClientRect();
        return {plot: stats(plot, plot.naturalWidth, plot.naturalHeight), plotShown: [r.width, r.height],
                video: stats(video, video.videoWidth, video.videoHeight)};
    }""")
    assert seen["plotShown"][0] > 200 and seen["plotShown"][1] > 100, seen
    assert 0.01 < seen["plot"]["ink"] < 0.9 and seen["plot"]["colours"] >= 6, seen
    assert seen["video"]["ink"] > 0.5 and seen["video"]["colours"] >= 20, seen
    page.wait_for_timeout(500)
    shot = shots / "video.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot)


def test_api_docs_render_offline(page, server, shots):
    """/docs is Swagger UI served by the app itself (no CDN: this machine has no internet)."""
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
    assert any("/api/v1/predict" in p for p in paths) and any("/api/v1/videos" in p for p in paths), paths
    shot = shots / "docs.png"
    page.screenshot(path=str(shot), full_page=False)
    keep(shot)

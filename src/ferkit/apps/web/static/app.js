// ferkit web page: photo upload, live camera over a WebSocket, video jobs. Plain JS, no build step.
"use strict";

const API = "/api/v1";
// Same colours as ferkit.runtime.draw (there BGR, here RGB).
const COLORS = {
  angry: "rgb(220,40,40)", disgust: "rgb(40,140,40)", fear: "rgb(160,60,160)", happy: "rgb(255,200,0)",
  sad: "rgb(30,110,200)", surprise: "rgb(0,220,220)", neutral: "rgb(190,190,190)", contempt: "rgb(150,90,30)",
};
const colorFor = (label) => COLORS[label] || "rgb(0,255,0)";
const inkFor = (label) => (["happy", "surprise", "neutral"].includes(label) ? "#000" : "#fff");
const $ = (id) => document.getElementById(id);
const pct = (v) => `${Math.round(v * 100)}%`;
let limits = { max_upload_mb: 20, max_video_mb: 200 };

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.detail || `${resp.status} ${resp.statusText}`;
  } catch (e) {
    return `${resp.status} ${resp.statusText}`;
  }
}

// -- tabs ------------------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
}
function showTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === name);
  if (name !== "live") stopCamera();
}

// -- model card and limits -------------------------------------------------------------------------------
(async () => {
  try {
    const [m, l] = await Promise.all([fetch(`${API}/model`).then((r) => r.json()), fetch(`${API}/limits`).then((r) => r.json())]);
    limits = l;
    $("model-info").textContent = `model ${m.name} (${m.architecture}, ${m.classes.length} expressions: ` +
      `${m.classes.join(", ")}) · face detector ${m.detector}`;
    $("photo-limits").textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF, up to ${l.max_upload_mb} MB`;
    $("video-limits").textContent = `MP4, WebM, MOV, AVI, MKV…, up to ${l.max_video_mb} MB`;
  } catch (e) {
    $("model-info").textContent = "cannot reach the server";
  }
})();

function wireDrop(zone, input, onFile) {
  input.addEventListener("change", () => input.files.length && onFile(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  });
}

// -- photo -----------------------------------------------------------------------------------------------
function bars(face) {
  const wrap = document.createElement("div");
  const entries = Object.entries(face.probabilities);
  for (const [name, v] of entries) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.innerHTML = `<span class="name"></span><div class="bar-track"><div class="bar-fill"></div></div>` +
      `<span class="value"></span>`;
    row.querySelector(".name").textContent = name;
    const fill = row.querySelector(".bar-fill");
    fill.style.width = `${(v * 100).toFixed(1)}%`;
    if (name === face.label) fill.style.background = colorFor(name);
    row.querySelector(".value").textContent = pct(v);
    wrap.appendChild(row);
  }
  return wrap;
}

async function faceThumb(bitmap, box) {
  const c = document.createElement("canvas");
  c.width = c.height = 168;
  if (!bitmap) return c;
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1) * 1.25;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  c.getContext("2d").drawImage(bitmap, cx - side / 2, cy - side / 2, side, side, 0, 0, c.width, c.height);
  return c;
}

async function predictPhoto(file) {
  const status = $("photo-status");
  if (file.size > limits.max_upload_mb * 1024 * 1024) {
    setStatus(status, `${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the ${limits.max_upload_mb} MB limit`, true);
    return;
  }
  setStatus(status, `analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  let resp;
  try {
    resp = await fetch(`${API}/predict?annotate=true`, { method: "POST", body: form });
  } catch (e) {
    setStatus(status, `cannot reach the server (${e})`, true);
    return;
  }
  if (!resp.ok) {
    setStatus(status, await errorText(resp), true);
    $("photo-result").hidden = true;
    return;
  }
  const r = await resp.json();
  window.ferkitPhoto = r;
  $("photo-annotated").src = r.annotated_image;
  const list = $("photo-faces");
  list.innerHTML = "";
  let bitmap = null;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); } catch (e) { /* thumbnails stay grey */ }
  for (const [i, f] of r.faces.entries()) {
    const card = document.createElement("div");
    card.className = "face-card";
    const thumb = await faceThumb(bitmap, f.box);
    const body = document.createElement("div");
    const h = document.createElement("h3");
    h.className = "face-label";
    h.textContent = `Face ${i + 1}: ${f.label} ${pct(f.confidence)}`;
    body.append(h, bars(f));
    card.append(thumb, body);
    list.appendChild(card);
  }
  setStatus(status, r.faces.length
    ? `${r.faces.length} face${r.faces.length > 1 ? "s" : ""} in ${file.name} (${r.width}×${r.height}, ` +
      `${Math.round(r.timings_ms.decode + r.timings_ms.analyze)} ms)`
    : `no face found in ${file.name}`);
  $("photo-result").hidden = false;
}
wireDrop($("photo-drop"), $("photo-input"), predictPhoto);

// -- live camera -----------------------------------------------------------------------------------------
// window.ferkitLive is read by the browser test: frames answered, the latest faces, fps.
const live = (window.ferkitLive = { running: false, inFlight: false, frames: 0, errors: 0, fps: 0, lastFaces: [], latencyMs: 0 });
let ws = null, mediaStream = null, lastResultAt = 0, sentAt = 0;
const grab = document.createElement("canvas");

async function startCamera() {
  const status = $("live-status");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(status, "this browser gives no camera access here (the page must be on http://127.0.0.1 or https)", true);
    return;
  }
  try {
    mediaStream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    setStatus(status, `no camera: ${e.name === "NotAllowedError" ? "permission was refused" : e.message || e.name}`, true);
    return;
  }
  const video = $("live-video");
  video.srcObject = mediaStream;
  $("live-stage").hidden = false;
  try { await video.play(); } catch (e) { /* autoplay of a muted stream is allowed */ }
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(`${proto}${location.host}${API}/live`);
  live.running = true;
  live.inFlight = false;
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  setStatus(status, "connecting…");
  ws.onopen = () => { setStatus(status, "live"); pump(); };
  ws.onclose = () => { if (live.running) { setStatus(status, "connection closed", true); stopCamera(false); } };
  ws.onerror = () => setStatus(status, "WebSocket error", true);
  ws.onmessage = (ev) => {
    live.inFlight = false;
    const now = performance.now();
    const r = JSON.parse(ev.data);
    if (r.error) {
      live.errors += 1;
      setStatus(status, r.error, true);
    } else {
      live.frames += 1;
      live.lastFaces = r.faces;
      live.latencyMs = now - sentAt;
      if (lastResultAt) {
        const inst = 1000 / Math.max(1, now - lastResultAt);
        live.fps = live.fps ? 0.85 * live.fps + 0.15 * inst : inst;
      }
      lastResultAt = now;
      drawOverlay(r);
      $("live-fps").textContent = `${live.fps.toFixed(1)} FPS · ${Math.round(live.latencyMs)} ms`;
    }
    requestAnimationFrame(pump);
  };
}

function pump() {
  const video = $("live-video");
  if (!live.running || live.inFlight || !ws || ws.readyState !== WebSocket.OPEN) return;
  if (video.readyState < 2 || !video.videoWidth) { setTimeout(pump, 50); return; }
  const w = Math.min(640, video.videoWidth);
  const h = Math.round((video.videoHeight * w) / video.videoWidth);
  grab.width = w;
  grab.height = h;
  grab.getContext("2d").drawImage(video, 0, 0, w, h);
  live.inFlight = true; // one frame in flight at most: the next is taken when this answer arrives
  grab.toBlob((blob) => {
    if (!blob || !ws || ws.readyState !== WebSocket.OPEN) { live.inFlight = false; return; }
    sentAt = performance.now();
    ws.send(blob);
  }, "image/jpeg", 0.8);
}

function drawOverlay(r) {
  const canvas = $("live-overlay");
  const video = $("live-video");
  const dpr = window.devicePixelRatio || 1;
  const cw = video.clientWidth, ch = video.clientHeight;
  canvas.width = Math.round(cw * dpr);
  canvas.height = Math.round(ch * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cw, ch);
  const sx = cw / r.width, sy = ch / r.height;
  const chips = $("live-faces");
  chips.innerHTML = "";
  for (const f of r.faces) {
    const [x1, y1, x2, y2] = f.box;
    const x = x1 * sx, y = y1 * sy, w = (x2 - x1) * sx, h = (y2 - y1) * sy;
    const color = colorFor(f.label);
    ctx.lineWidth = Math.max(2, w / 60);
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const text = `${f.label} ${pct(f.confidence)}`;
    ctx.font = `600 ${Math.max(14, Math.min(28, w / 7))}px system-ui, sans-serif`;
    const tw = ctx.measureText(text).width;
    const th = parseInt(ctx.font.match(/(\d+)px/)[1], 10) + 8;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = color;
    ctx.fillRect(x - ctx.lineWidth / 2, ty, tw + 12, th);
    ctx.fillStyle = inkFor(f.label);
    ctx.textBaseline = "middle";
    ctx.fillText(text, x + 6 - ctx.lineWidth / 2, ty + th / 2);
    const chip = document.createElement("span");
    chip.className = "chip live-label";
    chip.style.background = color;
    chip.style.color = inkFor(f.label);
    chip.textContent = `${f.track_id != null ? "#" + f.track_id + " " : ""}${f.label} ${pct(f.confidence)}`;
    chips.appendChild(chip);
  }
}

function stopCamera(closeSocket = true) {
  live.running = false;
  live.inFlight = false;
  if (ws && closeSocket) { ws.onclose = null; ws.close(); }
  ws = null;
  if (mediaStream) mediaStream.getTracks().forEach((t) => t.stop());
  mediaStream = null;
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
}
$("camera-start").addEventListener("click", startCamera);
$("camera-stop").addEventListener("click", () => { stopCamera(); setStatus($("live-status"), "stopped"); });

// -- video -----------------------------------------------------------------------------------------------
function uploadVideo(file) {
  const status = $("video-status"), bar = $("video-progress");
  $("video-progress-row").hidden = false;
  $("video-result").hidden = true;
  if (file.size > limits.max_video_mb * 1024 * 1024) {
    setStatus(status, `${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the ${limits.max_video_mb} MB limit`, true);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest(); // XHR, not fetch: it reports upload progress
  xhr.open("POST", `${API}/videos`);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) { bar.value = e.loaded / e.total; setStatus(status, `uploading ${pct(e.loaded / e.total)}`); }
  };
  xhr.onerror = () => setStatus(status, "upload failed: cannot reach the server", true);
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 202) { setStatus(status, body.detail || `upload failed (${xhr.status})`, true); return; }
    bar.value = 0;
    pollJob(body.url);
  };
  setStatus(status, "uploading…");
  xhr.send(form);
}

async function pollJob(url) {
  const status = $("video-status"), bar = $("video-progress");
  for (;;) {
    let job;
    try {
      const resp = await fetch(url);
      if (!resp.ok) { setStatus(status, await errorText(resp), true); return; }
      job = await resp.json();
    } catch (e) {
      setStatus(status, `lost the server (${e})`, true);
      return;
    }
    window.ferkitVideo = job;
    if (job.status === "queued") setStatus(status, "waiting for a free worker…");
    if (job.status === "running") {
      if (job.progress != null) bar.value = job.progress; else bar.removeAttribute("value");
      setStatus(status, `annotating: frame ${job.frames_done}${job.frames_total ? " of " + job.frames_total : ""}`);
    }
    if (job.status === "failed" || job.status === "cancelled") { setStatus(status, job.error || job.status, true); return; }
    if (job.status === "done") { showVideo(job); return; }
    await new Promise((res) => setTimeout(res, 500));
  }
}

function showVideo(job) {
  const r = job.result;
  $("video-progress").value = 1;
  setStatus($("video-status"), `done: ${r.frames} frames in ${r.seconds.toFixed(1)} s` + (job.warnings.length ? ` — ${job.warnings.join("; ")}` : ""));
  $("video-player").src = r.video_url;
  $("video-plot").src = r.plot_url;
  $("video-csv").href = `${r.csv_url}?download=true`;
  $("video-download").href = `${r.video_url}?download=true`;
  const labels = Object.entries(r.labels).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ");
  $("video-summary").textContent = `${r.tracks} face track${r.tracks === 1 ? "" : "s"}, ${r.faces} face-frames` +
    (labels ? ` (${labels})` : "");
  $("video-result").hidden = false;
}
wireDrop($("video-drop"), $("video-input"), uploadVideo);

// Deep links: /#live, /#video
if (["#live", "#video", "#photo"].includes(location.hash)) showTab(location.hash.slice(1));

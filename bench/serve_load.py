"""Load on `ferkit serve`: N concurrent clients POST a real photo to /api/v1/predict for T seconds.

Reports requests/s, latency percentiles, errors (any non-200 or failed request) and the server's peak
resident memory (sampled from /proc every 0.1 s). Bounded in clients, time and requests, and only ever
against 127.0.0.1: by default it starts its own server on a free port and stops it afterwards.

    python bench/serve_load.py                          # 16 clients, 60 s, the astronaut photo (512x512 JPEG)
    python bench/serve_load.py --clients 8 --duration 20
    python bench/serve_load.py --url http://127.0.0.1:8000 --pid 1234   # a server you started
    python bench/serve_load.py --server-args "--inference-threads 1"
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import astronaut_bgr, jpeg, rss_kb, start_server, stop_server  # noqa: E402


def default_image() -> bytes:
    return jpeg(astronaut_bgr())


def client(url: str, body: bytes, path: str, deadline: float, max_requests: int, out: list, counter: list,
           lock: threading.Lock) -> None:
    u = urllib.parse.urlsplit(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("serve_load only targets this machine (127.0.0.1)")
    conn = None
    while time.monotonic() < deadline:
        with lock:
            if counter[0] >= max_requests:
                return
            counter[0] += 1
        t0 = time.perf_counter()
        status = 0
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
        out.append((time.monotonic(), time.perf_counter() - t0, status))
    if conn is not None:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (each waits for its answer)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests in all")
    ap.add_argument("--warmup", type=int, default=3, help="requests sent before the clock starts")
    ap.add_argument("--image", type=Path, help="image to send (default: scikit-image's astronaut, 512x512 JPEG)")
    ap.add_argument("--annotate", action="store_true", help="also ask for the annotated image (?annotate=true)")
    ap.add_argument("--url", help="an already running server on this machine (default: start one)")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    ap.add_argument("--server-args", default="", help="extra `ferkit serve` options for the server started here")
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 0 < args.duration <= 3600:
        ap.error("--clients must be 1..256 and --duration 0..3600 s")

    body = args.image.read_bytes() if args.image else default_image()
    proc = log = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        proc, url, log = start_server(shlex.split(args.server_args), "ferkit-serve-load-")
        pid = proc.pid
    path = "/api/v1/predict" + ("?annotate=true" if args.annotate else "")
    try:
        for _ in range(args.warmup):
            req = urllib.request.Request(url + path, data=body, headers={"Content-Type": "image/jpeg"})
            urllib.request.urlopen(req, timeout=60).read()
        idle_rss = rss_kb(pid) if pid else 0
        peak = [idle_rss]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.1):
                peak[0] = max(peak[0], rss_kb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        if pid:
            sampler.start()
        load = os.getloadavg()[0]
        results: list = []
        counter, lock = [0], threading.Lock()
        t_start = time.monotonic()
        deadline = t_start + args.duration
        threads = [threading.Thread(target=client, args=(url, body, path, deadline, args.max_requests, results, counter, lock))
                   for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 120)
        wall = time.monotonic() - t_start
        stop.set()
        end_rss = rss_kb(pid) if pid else 0
        healthy = False
        try:
            with urllib.request.urlopen(url + "/api/v1/healthz", timeout=10) as r:
                healthy = r.status == 200
        except OSError:
            pass
    finally:
        if proc is not None:
            stop_server(proc)

    ok = [lat for _, lat, status in results if status == 200]
    errors = len(results) - len(ok)
    ms = [x * 1000 for x in ok]
    print(f"ferkit serve under load: {args.clients} clients x {args.duration:g} s, POST {path}, {len(body) / 1024:.0f} KiB "
          f"JPEG; {os.cpu_count()} CPUs, load average {load:.1f} at start")
    print()
    print("| clients | seconds | requests | errors | requests/s | p50 ms | p90 ms | p99 ms | max ms | RSS idle MiB | RSS peak MiB | RSS after MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {wall:.1f} | {len(results)} | {errors} | {len(ok) / wall:.1f} | {percentile(ms, .5):.0f} | "
          f"{percentile(ms, .9):.0f} | {percentile(ms, .99):.0f} | {max(ms, default=float('nan')):.0f} | "
          f"{idle_rss / 1024:.0f} | {peak[0] / 1024:.0f} | {end_rss / 1024:.0f} |")
    if ms:
        print(f"\nmean {statistics.fmean(ms):.0f} ms; server healthy afterwards: {healthy}")
    if log is not None and errors:
        print(f"server log: {log}")
    return 0 if errors == 0 and healthy else 1


if __name__ == "__main__":
    sys.exit(main())

"""Abuse of `ferkit serve`: good photo requests while hostile clients do their worst, for T seconds.

Starts its own server on 127.0.0.1 (a free port; stopped afterwards) and, for --duration seconds, mixes:

* good requests: clients POSTing a real photo (the astronaut) to /api/v1/predict, each on a fresh connection;
* slow clients: in the middle half of the run, more connections than the server allows (--slow) trickle their
  headers or their bodies a byte at a time, and reconnect when cut off;
* hang-ups: uploads that stop half way and close the connection;
* oversized bodies: a 10 GB Content-Length announced, and a chunked body that runs past the limit;
* decompression bombs: PNGs whose headers declare 20000x20000 and 60000x60000 pixels (built in memory);
* a crowd: a photo of 126 faces (the astronaut's head and shoulders tiled 14 x 9).

Prints one table: per kind of request, how many, and how they were answered (2xx / 4xx / 5xx / connection
errors); the good requests' latency p50/p99 and how many were served during the slow-client attack; the
server's resident memory at rest, at its peak and afterwards.

    python bench/serve_abuse.py                 # 60 s
    python bench/serve_abuse.py --duration 5    # a quick proof that it runs
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import socket
import struct
import sys
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import astronaut_bgr, jpeg, rss_kb, start_server, stop_server  # noqa: E402

MB = 1024 * 1024


def crowd_photo(cols: int = 14, rows: int = 9) -> bytes:
    import cv2
    import numpy as np

    tile = cv2.resize(astronaut_bgr()[20:220, 120:330], (120, 114), interpolation=cv2.INTER_AREA)
    return jpeg(np.vstack([np.hstack([tile] * cols)] * rows))


def png_bomb(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * ((w + 1) * 16), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


class Tally:
    """Outcomes per kind of request: (time, seconds, status); status 0 is a connection error."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        self.notes: dict[str, list] = defaultdict(list)

    def add(self, kind: str, t0: float, status: int) -> None:
        with self.lock:
            self.rows[kind].append((t0, time.monotonic() - t0, status))


def request(host: str, port: int, method: str, path: str, body=None, headers=None, timeout=120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def good_client(host, port, photo, until, tally: Tally) -> None:
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            status, _ = request(host, port, "POST", "/api/v1/predict", photo, {"Content-Type": "image/jpeg"})
        except (OSError, http.client.HTTPException):
            status = 0
        tally.add("good photo", t0, status)


def slow_clients(host, port, n, start, stop, tally: Tally) -> None:
    """Keep `n` connections trickling headers (half) or bodies (half) from `start` to `stop`."""
    while time.monotonic() < start:
        time.sleep(0.05)
    heads = b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
    bodies = b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n\xff\xd8\xff"
    conns: list[tuple[socket.socket | None, float, str]] = [(None, 0.0, "slow headers" if i % 2 else "slow body")
                                                            for i in range(n)]
    while time.monotonic() < stop:
        for i, (s, t0, kind) in enumerate(conns):
            if s is None:
                try:
                    s = socket.create_connection((host, port), timeout=5)
                    s.setblocking(False)
                    s.send(heads if kind == "slow headers" else bodies)
                    conns[i] = (s, time.monotonic(), kind)
                except OSError:
                    tally.add(kind, time.monotonic(), 0)
                continue
            try:
                answer = s.recv(4096)
                status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
                tally.add(kind, t0, status)  # the server answered (408/503) or closed: cut off
                s.close()
                conns[i] = (None, 0.0, kind)
                continue
            except BlockingIOError:
                pass
            except OSError:
                tally.add(kind, t0, 0)
                s.close()
                conns[i] = (None, 0.0, kind)
                continue
            try:
                s.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                pass
        time.sleep(0.2)
    for s, _, kind in conns:
        if s is not None:
            tally.notes["open at the end"].append(kind)
            s.close()


def hang_ups(host, port, until, tally: Tally) -> None:
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(b"POST /api/v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
                          + bytes(300_000))
            tally.add("hang-up mid-upload", t0, -1)  # no answer expected: the client has gone
        except OSError:
            tally.add("hang-up mid-upload", t0, 0)
        time.sleep(0.5)


def oversized(host, port, until, tally: Tally) -> None:
    big_chunk = bytes(MB)
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:  # announced: answered from the headers
            with socket.create_connection((host, port), timeout=30) as s:
                s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n")
                status = int(s.recv(4096).split(b" ", 2)[1])
        except (OSError, ValueError, IndexError):
            status = 0
        tally.add("10 GB announced", t0, status)
        t0 = time.monotonic()
        try:  # chunked, no length: stopped at the limit
            status, _ = request(host, port, "POST", "/api/v1/predict", iter([big_chunk] * 30))  # http.client chunks it
        except (OSError, http.client.HTTPException):
            status = 0  # the server may close before all was sent: the answer is then lost with it
        tally.add("chunked past the limit", t0, status)
        time.sleep(1.0)


def bombs(host, port, until, tally: Tally) -> None:
    payloads = [png_bomb(20000, 20000), png_bomb(60000, 60000)]
    while time.monotonic() < until:
        for p in payloads:
            t0 = time.monotonic()
            try:
                status, _ = request(host, port, "POST", "/api/v1/predict", p, {"Content-Type": "image/png"})
            except (OSError, http.client.HTTPException):
                status = 0
            tally.add("decompression bomb", t0, status)
        time.sleep(1.0)


def crowd(host, port, photo, until, tally: Tally) -> None:
    import json

    while True:  # at least one, however short the run
        t0 = time.monotonic()
        try:
            status, body = request(host, port, "POST", "/api/v1/predict", photo, {"Content-Type": "image/jpeg"}, 600)
            if status == 200:
                tally.notes["crowd faces"].append(len(json.loads(body)["faces"]))
        except (OSError, http.client.HTTPException, ValueError):
            status = 0
        tally.add("126-face photo", t0, status)
        if time.monotonic() >= until:
            return
        time.sleep(5.0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of abuse (default 60)")
    ap.add_argument("--good-clients", type=int, default=4, help="concurrent clients sending good photos")
    ap.add_argument("--slow", type=int, default=250, help="slow connections during the attack (more than the "
                                                          "server's --max-connections, 200 by default)")
    ap.add_argument("--server-args", default="", help="extra `ferkit serve` options")
    args = ap.parse_args(argv)
    if not 1 <= args.duration <= 3600 or not 1 <= args.good_clients <= 64 or not 0 <= args.slow <= 2000:
        ap.error("--duration must be 1..3600 s, --good-clients 1..64, --slow 0..2000")

    photo, crowd_jpg = jpeg(astronaut_bgr()), crowd_photo()
    proc, url, log = start_server(shlex.split(args.server_args), "ferkit-serve-abuse-")
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    tally = Tally()
    try:
        for _ in range(2):  # warm up
            request(host, port, "POST", "/api/v1/predict", photo, {"Content-Type": "image/jpeg"})
        idle = rss_kb(proc.pid)
        peak, stop_sampling = [idle], threading.Event()

        def sample():
            while not stop_sampling.wait(0.1):
                peak[0] = max(peak[0], rss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t_start = time.monotonic()
        until = t_start + args.duration
        attack = (t_start + args.duration / 4, t_start + args.duration * 3 / 4)
        workers = [threading.Thread(target=good_client, args=(host, port, photo, until, tally))
                   for _ in range(args.good_clients)]
        workers += [threading.Thread(target=slow_clients, args=(host, port, args.slow, *attack, tally)),
                    threading.Thread(target=hang_ups, args=(host, port, until, tally)),
                    threading.Thread(target=oversized, args=(host, port, until, tally)),
                    threading.Thread(target=bombs, args=(host, port, until, tally)),
                    threading.Thread(target=crowd, args=(host, port, crowd_jpg, until, tally))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(args.duration + 660)
        wall = time.monotonic() - t_start
        time.sleep(1.0)
        stop_sampling.set()
        after = rss_kb(proc.pid)
        try:
            healthy = request(host, port, "GET", "/api/v1/healthz", timeout=10)[0] == 200
        except OSError:
            healthy = False
    finally:
        stop_server(proc)

    print(f"ferkit serve under abuse: {args.duration:g} s ({wall:.0f} s with the last answers), "
          f"{args.good_clients} good clients, {args.slow} slow connections from {attack[0] - t_start:.0f} "
          f"to {attack[1] - t_start:.0f} s; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| requests | count | 2xx | 4xx | 5xx | connection closed, no answer | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    five_xx = 0
    for kind, rows in tally.rows.items():
        statuses = [s for _, _, s in rows]
        ms = [d * 1000 for _, d, s in rows if s > 0]
        c2 = sum(200 <= s < 300 for s in statuses)
        c4 = sum(400 <= s < 500 for s in statuses)
        c5 = sum(s >= 500 for s in statuses)
        five_xx += c5 if kind in ("good photo", "126-face photo", "decompression bomb") else 0
        print(f"| {kind} | {len(rows)} | {c2} | {c4} | {c5} | {sum(s <= 0 for s in statuses)} | "
              f"{percentile(ms, .5):.0f} | {percentile(ms, .99):.0f} |")
    good = tally.rows.get("good photo", [])
    during = [s for t, _, s in good if attack[0] <= t < attack[1]]
    print()
    print(f"good requests during the slow-client attack: {sum(s == 200 for s in during)} of {len(during)} served")
    still = tally.notes["open at the end"]
    print(f"slow connections still open when the attack ended: {still.count('slow headers')} trickling headers, "
          f"{still.count('slow body')} trickling bodies (the server's --client-timeout is their grace period)")
    if tally.notes["crowd faces"]:
        print(f"faces found in the 126-face photo: {', '.join(map(str, tally.notes['crowd faces']))}")
    print(f"server RSS: {idle / 1024:.0f} MiB at rest, {peak[0] / 1024:.0f} MiB peak, {after / 1024:.0f} MiB after; "
          f"healthy afterwards: {healthy}")
    failed = any(s != 200 for _, _, s in good) or five_xx or not healthy
    if failed:
        print(f"server log: {log}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

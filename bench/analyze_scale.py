"""`ferkit analyze` at scale on this machine: images/s and video frames/s with 1 and 2 local workers and on a
local Ray instance, Ray's overhead against the local pool, and each worker's peak memory.

The corpus is real: FER2013 faces (PrivateTest) upscaled and pasted into photos (PNG/JPEG), and videos
encoded by OpenCV from such frames (tests/_analyze_corpus.py builds both). Each configuration runs the
real command twice, photos only and videos only, into a fresh RESULTS folder; times are the command's
wall time (start-up, model loading and writing included) and the job's own time (workers running).

    python bench/analyze_scale.py                          # 1,000 photos, 3 videos of 60 s at 10 fps
    python bench/analyze_scale.py --images 20 --videos 1 --video-seconds 3    # a quick check
    python bench/analyze_scale.py --memory 10     # peak memory: a 10-minute 640x480 video vs a 20-second one

Photos are analysed at the model card's test-time augmentation (fer2013-7: multi, 16 views a face), video
frames at most at flip, as everywhere in ferkit; `--tta flip` times photos at the video setting.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the corpus builder the tests use

FERKIT = [sys.executable, "-m", "ferkit.apps.cli"]
SUMMARY = re.compile(r"(\d+) face\(s\) in (\d+) frame\(s\)(?: in ([\d.]+) s)?")
PEAK = re.compile(r"peak memory (?:per worker|of the worker): ([\d]+)(?:-([\d]+))? MiB")


def run(sources: Path, out: Path, *flags: str) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([*FERKIT, "analyze", str(sources), "-o", str(out), "--no-progress", *flags],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"ferkit analyze {' '.join(flags)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    m, peak = SUMMARY.search(r.stdout), PEAK.search(r.stdout)
    return {"wall": wall, "job": float(m.group(3) or wall), "frames": int(m.group(2)), "faces": int(m.group(1)),
            "peak": (int(peak.group(1)), int(peak.group(2) or peak.group(1))) if peak else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--video-seconds", type=float, default=60.0)
    ap.add_argument("--video-fps", type=float, default=10.0)
    ap.add_argument("--workers", default="1,2", help="local pool sizes to time (comma-separated)")
    ap.add_argument("--ray-workers", type=int, default=2, help="Ray actors (0: skip Ray)")
    ap.add_argument("--tta", help="passed to ferkit analyze (default: the model card's for photos)")
    ap.add_argument("--memory", type=float, metavar="MINUTES",
                    help="instead: one worker's peak memory on a MINUTES-long 640x480 video at 5 fps vs a 20 s one")
    ap.add_argument("--keep", type=Path, help="build the corpus and results here instead of a temporary folder")
    args = ap.parse_args()

    from _analyze_corpus import build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        if args.memory:
            return memory(base, args.memory)
        t0 = time.perf_counter()
        corpus = build_corpus(base / "corpus", images=args.images, videos=args.videos, broken=False,
                              video_frames=int(args.video_seconds * args.video_fps), fps=args.video_fps)
        print(f"corpus: {len(corpus.images)} photos, {len(corpus.videos)} videos of {args.video_seconds:g} s "
              f"at {args.video_fps:g} fps ({time.perf_counter() - t0:.1f} s to build)")
        tta = ["--tta", args.tta] if args.tta else []
        configs = [(f"local x{n}", ["--workers", str(n), *tta]) for n in map(int, args.workers.split(","))]
        if args.ray_workers:
            configs.append((f"Ray x{args.ray_workers}", ["--ray", "--workers", str(args.ray_workers), *tta]))
        rows = []
        for name, flags in configs:
            slug = re.sub(r"\W+", "_", name)
            img = run(base / "corpus" / "photos", base / f"out_{slug}_photos", *flags)
            vid = run(base / "corpus" / "videos", base / f"out_{slug}_videos", *flags)
            rows.append((name, img, vid))
            print(f"{name:>10}: photos {img['frames'] / img['wall']:6.1f}/s wall ({img['frames'] / img['job']:6.1f}/s "
                  f"job), video frames {vid['frames'] / vid['wall']:6.1f}/s wall ({vid['frames'] / vid['job']:6.1f}/s "
                  f"job); peak memory per worker {_peak(img, vid)}", flush=True)
        local = {name: (img, vid) for name, img, vid in rows if name.startswith("local")}
        ray = [(name, img, vid) for name, img, vid in rows if name.startswith("Ray")]
        for name, img, vid in ray:
            twin = local.get(f"local x{args.ray_workers}")
            if twin:
                for what, mine, theirs in (("photos", img, twin[0]), ("videos", vid, twin[1])):
                    print(f"Ray overhead vs local x{args.ray_workers} ({what}): {mine['wall'] - theirs['wall']:+.1f} s "
                          f"wall ({mine['wall'] / theirs['wall'] - 1:+.0%}), job time {mine['job'] / theirs['job'] - 1:+.0%}")


def memory(base: Path, minutes: float, fps: float = 5.0) -> None:
    """Videos are streamed frame by frame: a long video must not need more memory than a short one."""
    from _analyze_corpus import real_faces, write_video

    faces = real_faces(40, seed=3)
    (base / "memory").mkdir(parents=True, exist_ok=True)
    for label, seconds in (("short", 20.0), ("long", minutes * 60)):
        t0 = time.perf_counter()
        video = write_video(base / "memory" / f"{label}.mp4", faces, int(seconds * fps), fps=fps, per_face=25,
                            size=(640, 480))
        built = time.perf_counter() - t0
        r = run(video, base / "memory" / f"out_{label}", "--workers", "1")
        print(f"{label:>5} video: {seconds / 60:5.1f} min of 640x480 at {fps:g} fps ({int(seconds * fps)} frames, "
              f"{video.stat().st_size / 1e6:.1f} MB, built in {built:.0f} s): {r['frames']} frames analysed in "
              f"{r['job']:.0f} s; worker peak memory {r['peak'][1]} MiB", flush=True)


def _peak(img: dict, vid: dict) -> str:
    peaks = [p for r in (img, vid) if r["peak"] for p in r["peak"]]
    return f"{min(peaks)}-{max(peaks)} MiB" if peaks else "n/a"


if __name__ == "__main__":
    main()

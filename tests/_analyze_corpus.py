"""A real media corpus for batch analysis, built in a tmp dir: FER2013 faces upscaled and pasted into
photos (PNG and JPEG, nested folders), short videos encoded by OpenCV (mp4v, MJPG), and broken files.

Used by the analyze tests and by bench/analyze_scale.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

FACE = 160  # FER2013's 48 px faces, upscaled so a face detector finds them


def real_faces(n: int, seed: int = 0) -> np.ndarray:
    """`n` real FER2013 faces (PrivateTest, a fixed random sample), uint8 (n, 48, 48)."""
    from conftest import data_dir_or_skip

    from ferkit.data import load_dataset

    faces = load_dataset(data_dir_or_skip()).split("PrivateTest").images
    idx = np.random.default_rng(seed).choice(len(faces), size=min(n, len(faces)), replace=False)
    return faces[np.sort(idx)]


def _paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int) -> None:
    big = cv2.resize(face, (FACE, FACE), interpolation=cv2.INTER_CUBIC)
    canvas[y:y + FACE, x:x + FACE] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


def photo(faces: list[np.ndarray]) -> np.ndarray:
    """One or two faces side by side on a grey page, with margins (the detector needs some context)."""
    gap = 60
    w = gap + len(faces) * (FACE + gap)
    page = np.full((FACE + 2 * gap, w, 3), 128, np.uint8)
    for i, f in enumerate(faces):
        _paste(page, f, gap + i * (FACE + gap), gap)
    return page


def frame(face: np.ndarray, t: float, size=(480, 320)) -> np.ndarray:
    """A video frame: the face drifting right with time t in [0, 1]."""
    w, h = size
    img = np.full((h, w, 3), (150, 140, 130), np.uint8)
    _paste(img, face, 60 + int(round(200 * t)), (h - FACE) // 2)
    return img


def write_video(path: Path, faces: np.ndarray, n: int, fps: float = 10.0, fourcc: str = "mp4v",
                per_face: int = 10, size=(480, 320)) -> Path:
    """`n` frames; the face changes every `per_face` frames (the same spot: one track, changing expressions)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(n):
        writer.write(frame(faces[(i // per_face) % len(faces)], i / max(1, n - 1), size))
    writer.release()
    return path


@dataclass
class Corpus:
    root: Path
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    broken: list[Path] = field(default_factory=list)

    @property
    def all(self) -> list[Path]:
        return self.images + self.videos + self.broken


def build_corpus(root: Path, images: int = 12, videos: int = 2, video_frames: int = 30, fps: float = 10.0,
                 broken: bool = True, seed: int = 0) -> Corpus:
    """images: photos with one face (every third with two) in root/photos/{a,b}/ as PNG and JPEG;
    videos: root/videos/clipN.mp4 (mp4v) and .avi (MJPG), alternating; broken: a truncated JPEG,
    a text file named .png and a truncated MP4."""
    faces = real_faces(images * 2 + videos * 4 + 4, seed)
    corpus = Corpus(root)
    k = 0
    for i in range(images):
        count = 2 if i % 3 == 2 else 1
        img = photo(list(faces[k:k + count]))
        k += count
        folder = root / "photos" / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"img{i:04d}.png" if i % 2 == 0 else f"img{i:04d}.jpg")
        assert cv2.imwrite(str(path), img)
        corpus.images.append(path)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        fourcc, ext = ("mp4v", ".mp4") if v % 2 == 0 else ("MJPG", ".avi")
        corpus.videos.append(write_video(root / "videos" / f"clip{v}{ext}", faces[k:k + 4], video_frames, fps, fourcc))
        k += 4
    if broken:
        jpeg = cv2.imencode(".jpg", photo([faces[0]]))[1].tobytes()
        (root / "photos" / "a" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
        (root / "photos" / "b" / "notes.png").write_text("this is not an image\n")
        good = corpus.videos[0] if corpus.videos else write_video(root / "videos" / "tmp.mp4", faces[:2], 20)
        data = good.read_bytes()
        (root / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 4])
        corpus.broken = [root / "photos" / "a" / "truncated.jpg", root / "photos" / "b" / "notes.png",
                         root / "videos" / "truncated.mp4"]
    return corpus

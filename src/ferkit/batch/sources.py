"""SOURCES -> the image and video files to analyse, each once, in a stable order.

An argument is, in this order of checks:

- `@LIST`, or an existing file ending in `.txt` or `.csv`: a list of sources, one a line (blank lines and
  lines starting with `#` are skipped; in a `.csv`, the first column, and a first row reading `path`,
  `source` or `file` is a header). Relative entries are relative to the list file's folder. Each entry
  is expanded like an argument (file, folder or glob), but a list inside a list is not read.
- an existing folder: every image and video file below it (recursively; hidden files skipped), sorted;
- a pattern with `*`, `?` or `[` (`**` crosses folders): the matching files and folders, sorted;
- anything else: one file. It need not exist: a missing file fails alone, named in the status table.

A file is a video when its suffix is a video's (`.mp4`, `.avi`, `.mov`, `.mkv`, `.webm`, ...), else an image.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ferkit.errors import DataError, UsageError

LIST_SUFFIXES = (".txt", ".csv")
_HEADER = {"path", "source", "file", "filename"}


@dataclass(frozen=True)
class Source:
    path: str  # absolute, normalised (symbolic links kept as named)
    kind: str  # "image" or "video"

    @property
    def key(self) -> str:
        return source_key(self.path)


def source_key(path: str) -> str:
    """The deterministic name of a source's files: 20 hex digits of the sha256 of its absolute path."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def media_suffixes() -> tuple[set[str], set[str]]:
    from ferkit.images import IMAGE_SUFFIXES
    from ferkit.runtime.video import VIDEO_SUFFIXES

    return set(IMAGE_SUFFIXES), set(VIDEO_SUFFIXES) - set(IMAGE_SUFFIXES)  # .gif: an image


def kind_of(path: str | Path) -> str:
    return "video" if Path(path).suffix.lower() in media_suffixes()[1] else "image"


def _absolute(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def _is_pattern(arg: str) -> bool:
    return any(ch in arg for ch in "*?[")


def _folder_files(folder: Path) -> list[Path]:
    images, videos = media_suffixes()
    wanted = images | videos
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in wanted)
    return sorted(found)


def read_list(path: Path) -> list[str]:
    """The entries of a list file (see the module's help), relative ones joined to its folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: a list of sources must be UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read this list of sources ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".csv":
        rows = [row[0].strip() for row in csv.reader(text.splitlines()) if row and row[0].strip()]
        if rows and rows[0].lower() in _HEADER:
            rows = rows[1:]
    else:
        rows = [line.strip() for line in text.splitlines()]
    entries = [r for r in rows if r and not r.startswith("#")]
    return [e if os.path.isabs(os.path.expanduser(e)) else str(path.parent / e) for e in entries]


def _expand_one(arg: str, out: list[Path], warnings: list[str], nested: bool) -> None:
    p = Path(os.path.expanduser(arg))
    if not nested and (arg.startswith("@") or (p.suffix.lower() in LIST_SUFFIXES and p.is_file())):
        listed = Path(os.path.expanduser(arg[1:])) if arg.startswith("@") else p
        if not listed.is_file():
            raise DataError(f"{arg}: no such list of sources")
        entries = read_list(listed)
        if not entries:
            warnings.append(f"{listed}: the list names no sources")
        for entry in entries:
            _expand_one(entry, out, warnings, nested=True)
    elif p.is_dir():
        found = _folder_files(p)
        if not found:
            warnings.append(f"{arg}: no image or video files in this folder")
        out.extend(found)
    elif _is_pattern(arg) and not p.exists():
        matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
        if not matches:
            warnings.append(f"{arg}: the pattern matches no files")
        for m in matches:
            mp = Path(m)
            out.extend(_folder_files(mp) if mp.is_dir() else [mp])
    else:
        out.append(p)


def expand_sources(args: list[str], exclude: str | Path | None = None) -> tuple[list[Source], list[str]]:
    """(sources, warnings): every source once (the first time it is named), files under `exclude` left out."""
    if not args:
        raise UsageError("no SOURCES given: name image or video files, folders, patterns or @LIST files")
    found: list[Path] = []
    warnings: list[str] = []
    for arg in args:
        _expand_one(str(arg), found, warnings, nested=False)
    skip = _absolute(exclude) + os.sep if exclude is not None else None
    seen: set[str] = set()
    sources: list[Source] = []
    for f in found:
        path = _absolute(f)
        if (skip and path.startswith(skip)) or path in seen:
            continue
        seen.add(path)
        sources.append(Source(path, kind_of(path)))
    return sources, warnings

"""Bad inputs as a user meets them, each built as a real file in a temp dir by a small function.

A `Case` is one bad input: a name, a builder that writes the file under a folder and returns its path,
the commands it applies to, the role the file plays there ('input': the command's own input; 'model':
passed as --model), the exit status expected (one for all commands, or one per command) and a regex
the one error line must match (that line must also name the file). A test module drives the cases of
the commands it knows (`cases_for`); to cover another command or layer, append cases to CASES (or add
a list beside it) and write the test that runs them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from _runtime_media import astronaut_bgr, encode, truncated_copy, write_video


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # writes the bad file under the folder given, returns its path
    commands: tuple[str, ...]  # the CLI commands (or other drivers) it applies to
    message: str  # regex the error line naming the file must match
    exit: int | Mapping[str, int] = 2  # expected exit status, or {command: status}
    role: str = "input"  # "input" (the command's input), "model" (given as --model); data roles below
    env: Mapping[str, str] = field(default_factory=dict)  # environment for the run

    def exit_for(self, command: str) -> int:
        return self.exit if isinstance(self.exit, int) else self.exit[command]


def cases_for(command: str, cases=None) -> list[Case]:
    return [c for c in (CASES if cases is None else cases) if command in c.commands]


# -- images ---------------------------------------------------------------------------------------------
def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def empty_image(d: Path) -> Path:
    return _write(d / "empty.jpg", b"")


def truncated_jpeg(d: Path) -> Path:
    jpg = encode(astronaut_bgr(), ".jpg")
    return _write(d / "truncated.jpg", jpg[: len(jpg) // 3])


def text_as_png(d: Path) -> Path:
    return _write(d / "text.png", b"hello, I am text with an image name\n")


def missing_image(d: Path) -> Path:
    return d / "nosuch.jpg"  # never written


def fifo(name: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        os.mkfifo(p)  # nothing ever writes to it: opening it for reading would block forever
        return p
    return build


def folder_named_like_an_image(d: Path) -> Path:
    p = d / "album.jpg"
    p.mkdir()
    return p


def hdr_bomb(d: Path) -> Path:
    """A Radiance HDR header declaring 100000 x 100000 pixels (Pillow cannot size .hdr; OpenCV would allocate 120 GB)."""
    return _write(d / "bomb.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n" + b"\x02\x02\x80\x00" * 256)


def png_bomb(d: Path) -> Path:
    """A valid PNG header (IHDR with its CRC) declaring 60000 x 60000 pixels, then a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 4096)
    data += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return _write(d / "bomb.png", data)


def tiff_bomb(d: Path) -> Path:
    """A float TIFF (Pillow cannot open 3-channel float) whose header declares 50000 x 50000 pixels."""
    ok, buf = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.float32))
    data = bytearray(buf.tobytes())
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257):
            data[at + 2:at + 12] = struct.pack(order + "HII", 4, 1, 50000)  # LONG 50000
    return _write(d / "bomb.tif", bytes(data))


# -- videos ---------------------------------------------------------------------------------------------
def empty_video(d: Path) -> Path:
    return _write(d / "empty.mp4", b"")


def text_as_video(d: Path) -> Path:
    return _write(d / "text.mp4", b"not a video, just text with a video name\n")


def truncated_mp4(d: Path) -> Path:
    """An MP4 cut in half: its index (written at the end by OpenCV's muxer) is gone."""
    return truncated_copy(write_video(d / "whole.mp4", n=10, fps=10), d / "cut.mp4", 0.5)


def no_decodable_frame(d: Path) -> Path:
    """An MJPEG AVI whose index is intact but every frame's JPEG data is zeroed: it opens, and no frame decodes."""
    data = bytearray(write_video(d / "ok.avi", n=10, fps=10, fourcc="MJPG").read_bytes())
    at = data.find(b"\xff\xd8\xff")
    while at >= 0:
        data[at:at + 3000] = bytes(min(3000, len(data) - at))
        at = data.find(b"\xff\xd8\xff", at + 3000)
    return _write(d / "noframes.avi", bytes(data))


def audio_only(d: Path) -> Path:
    """An MP4 with a one-second 440 Hz tone and no picture, made by ffmpeg itself."""
    import imageio_ffmpeg

    p = d / "sound.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-c:a", "aac", str(p)], check=True)
    return p


def huge_frames(d: Path) -> Path:
    """A Y4M header announcing 16000 x 16000 frames (256 megapixels each) and a sliver of data."""
    return _write(d / "huge.y4m", b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)


# -- model cards ----------------------------------------------------------------------------------------
def _shipped() -> tuple[Path, dict]:
    from ferkit.runtime.model import resolve_model_path

    onnx = resolve_model_path(None)
    return onnx, json.loads(onnx.with_suffix(".json").read_text())


def card(name: str, make: Callable[[dict], object] | None = None, text: str | None = None) -> Callable[[Path], Path]:
    """A model beside a bad card: the shipped ONNX file (linked), and a card made from the shipped one."""
    def build(d: Path) -> Path:
        onnx, good = _shipped()
        model = d / f"{name}.onnx"
        model.symlink_to(onnx)
        body = text if text is not None else json.dumps(make(json.loads(json.dumps(good))))
        model.with_suffix(".json").write_text(body)
        return model
    return build


def _fewer_classes(c: dict) -> dict:
    """Five classes, and nothing else in the card that counts them, so only the ONNX output disagrees."""
    c = {k: v for k, v in c.items() if k != "prior_correction"}
    return {**c, "classes": c["classes"][:5]}


def _without(key):
    return lambda c: {k: v for k, v in c.items() if k != key}


def _with(**changes):
    return lambda c: {**c, **changes}


def _input(**changes):
    return lambda c: {**c, "input": {**c["input"], **changes}}


IMAGE_COMMANDS = ("predict", "chart")
MODEL_COMMANDS = ("predict", "chart", "video")

CASES: list[Case] = [
    # images: a batch (predict) goes on past a bad file and exits 1; a single image (chart) exits 2
    Case("empty image", empty_image, IMAGE_COMMANDS, r"empty file \(0 bytes\)", {"predict": 1, "chart": 2}),
    Case("truncated jpeg", truncated_jpeg, IMAGE_COMMANDS, r"not a readable image", {"predict": 1, "chart": 2}),
    Case("text named .png", text_as_png, IMAGE_COMMANDS, r"not a readable image", {"predict": 1, "chart": 2}),
    Case("missing image", missing_image, IMAGE_COMMANDS, r"no such file"),
    Case("FIFO named .jpg", fifo("pipe.jpg"), IMAGE_COMMANDS, r"not a regular file \(a FIFO\)"),
    Case("folder named .jpg", folder_named_like_an_image, ("chart",), r"is a directory, not an image"),
    Case("HDR header bomb", hdr_bomb, IMAGE_COMMANDS, r"100000x100000 pixels is over the limit", {"predict": 1, "chart": 2}),
    Case("PNG header bomb", png_bomb, IMAGE_COMMANDS, r"over the limit", {"predict": 1, "chart": 2}),
    Case("TIFF header bomb", tiff_bomb, IMAGE_COMMANDS, r"50000x50000 pixels is over the limit", {"predict": 1, "chart": 2}),
    # videos
    Case("empty video", empty_video, ("video",), r"empty file \(0 bytes\)"),
    Case("text named .mp4", text_as_video, ("video",), r"not a readable video"),
    Case("MP4 cut before its index", truncated_mp4, ("video",), r"not a readable video"),
    Case("no decodable frame", no_decodable_frame, ("video",), r"no frame could be decoded"),
    Case("sound but no picture", audio_only, ("video",), r"no video stream"),
    Case("16000x16000 frames", huge_frames, ("video",), r"16000x16000 frames are over the limit"),
    Case("missing video", missing_image, ("video",), r"no such file"),
    Case("FIFO named .mp4", fifo("pipe.mp4"), ("video",), r"not a regular file \(a FIFO\)"),
    # model cards (the shipped ONNX file beside a bad card)
    Case("card is a list", card("list", text="[1, 2, 3]"), MODEL_COMMANDS, r"list\.json: not a model card \(a JSON list", role="model"),
    Case("card is null", card("null", text="null"), MODEL_COMMANDS, r"null\.json: not a model card \(a JSON null", role="model"),
    Case("card not JSON", card("garbled", text="{name: fer"), MODEL_COMMANDS, r"garbled\.json: not a model card \(not JSON", role="model"),
    Case("card misses classes", card("noclasses", _without("classes")), MODEL_COMMANDS, r"missing classes", role="model"),
    Case("classes not a list", card("classstr", _with(classes="angry,happy")), MODEL_COMMANDS,
         r"'classes' must be a non-empty list", role="model"),
    Case("classes not strings", card("classnum", _with(classes=[0, 1, 2, 3, 4, 5, 6])), MODEL_COMMANDS,
         r"'classes' must be a non-empty list of class names", role="model"),
    Case("unknown tta", card("tenviews", _with(tta="ten")), MODEL_COMMANDS, r"tta 'ten': unknown TTA mode", role="model"),
    Case("colour input", card("rgb", _input(color="rgb")), MODEL_COMMANDS, r"input color 'rgb'", role="model"),
    Case("zero std", card("std0", _input(std=0)), MODEL_COMMANDS, r"input std 0 must be above 0", role="model"),
    Case("three-channel shape", card("chan3", _input(shape=[None, 3, 48, 48])), MODEL_COMMANDS,
         r"input shape \[None, 3, 48, 48\]", role="model"),
    Case("card size differs from the ONNX input", card("size64", _input(shape=[None, 1, 64, 64])), MODEL_COMMANDS,
         r"size64\.onnx: its input 'faces' has shape \[N, 1, 48, 48\] but its card size64\.json says \[N, 1, 64, 64\]",
         role="model"),
    Case("classes differ from the ONNX output", card("fewer", _fewer_classes),
         MODEL_COMMANDS, r"outputs \d+ classes but its card lists 5", role="model"),
]


# -- data sets (real FER2013 rows, then damaged) ----------------------------------------------------------
# Roles here: "input" (the data argument), "ferplus" (given as --ferplus; the builder writes the good CSV
# beside it as small.csv), "tree" (a file inside the class tree the builder writes at <folder>/tree; the
# command reads the tree, reports the file as skipped and goes on: exit 0).
DATA_ROWS = 30


def real_fer_lines() -> list[bytes]:
    """The header and the first DATA_ROWS rows of the real FER2013 CSV, as bytes with their newlines."""
    import gzip

    from conftest import data_dir_or_skip

    with gzip.open(data_dir_or_skip() / "fer2013.csv.gz", "rb") as fh:
        return [fh.readline() for _ in range(DATA_ROWS + 1)]


def fer_csv(name: str, change: Callable[[list[bytes]], list[bytes]]) -> Callable[[Path], Path]:
    """The real rows, changed by `change` (header is line 0), written as <folder>/<name>."""
    return lambda d: _write(d / name, b"".join(change(real_fer_lines())))


def _row(i: int, new: Callable[[bytes], bytes]) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: [new(line) if k == i else line for k, line in enumerate(lines)]


def fer_gzip(name: str, damage: Callable[[bytearray], bytearray]) -> Callable[[Path], Path]:
    import gzip

    return lambda d: _write(d / name, bytes(damage(bytearray(gzip.compress(b"".join(real_fer_lines()))))))


def _flip_crc(data: bytearray) -> bytearray:
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    return data


def fer_votes(change: Callable[[list[bytes]], list[bytes]]) -> Callable[[Path], Path]:
    """small.csv (the real rows) and votes.csv (their real FER+ votes, changed); returns votes.csv."""
    def build(d: Path) -> Path:
        from conftest import data_dir_or_skip

        _write(d / "small.csv", b"".join(real_fer_lines()))
        votes = (data_dir_or_skip() / "fer2013new.csv").read_bytes().splitlines(keepends=True)[: DATA_ROWS + 1]
        return _write(d / "votes.csv", b"".join(change(votes)))
    return build


def fer_tree(odd: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """A class tree of the real faces at <folder>/tree, plus one odd file made by `odd` in train/happy."""
    def build(d: Path) -> Path:
        from ferkit.data import load_fer2013, write_folder_tree

        src = _write(d / "rows.csv", b"".join(real_fer_lines()))
        write_folder_tree(load_fer2013(src, use_cache=False), d / "tree")
        src.unlink()
        folder = d / "tree" / "train" / "happy"
        folder.mkdir(parents=True, exist_ok=True)
        return odd(folder)
    return build


def _broken_link(folder: Path) -> Path:
    (folder / "broken.png").symlink_to(folder / "no-such-target.png")
    return folder / "broken.png"


def _link_loop(folder: Path) -> Path:
    (folder / "loop1.png").symlink_to("loop2.png")
    (folder / "loop2.png").symlink_to("loop1.png")
    return folder / "loop1.png"


def _text_png(folder: Path) -> Path:
    return _write(folder / "notes.png", b"not an image, only text\n")


def _no_class_folders(d: Path) -> Path:
    (d / "photos" / "holiday").mkdir(parents=True)
    _write(d / "photos" / "holiday" / "a.png", b"x")
    return d / "photos"


DATA_COMMANDS = ("data info", "data convert", "explore")
FERPLUS_COMMANDS = ("data info", "explore")  # the commands with --ferplus
GZIP_FAULT = r"truncated or corrupt gzip \(after row \d+\)"

DATA_CASES: list[Case] = [
    Case("CSV without a header row", fer_csv("noheader.csv", lambda lines: lines[1:]), DATA_COMMANDS,
         r"no header row \(line 1 is data\); expected columns emotion,pixels\[,Usage\]"),
    Case("CSV with a non-UTF-8 row",
         fer_csv("latin1.csv", _row(3, lambda r: r.replace(b"Training", b"Tr\xe9ining"))), DATA_COMMANDS,
         r"latin1\.csv row 3 \(line 4\): not UTF-8 text \(byte 0xe9 in field 3\)"),
    Case("CSV field over 128 KB",
         fer_csv("hugefield.csv", _row(4, lambda r: r.replace(b",", b"," + b"7 " * 70_000, 1))), DATA_COMMANDS,
         r"hugefield\.csv row 4 \(line 5\): a field is longer than 131,072 characters"),
    Case("CSV line over 1 MiB", fer_csv("endless.csv", _row(2, lambda r: b"3," + b"1" * (1 << 20) + b",Training\n")),
         DATA_COMMANDS, r"endless\.csv row 2 \(line 3\): a line longer than 1,048,576 characters"),
    Case("CSV row of 3 pixels", fer_csv("short.csv", _row(5, lambda r: b"3,1 2 3,Training\n")), DATA_COMMANDS,
         r"short\.csv row 5 \(line 6\): 3 pixel values, expected 2304"),
    Case("empty CSV", fer_csv("empty.csv", lambda lines: []), DATA_COMMANDS, r"empty file, expected a header"),
    Case("CSV with a header only", fer_csv("header.csv", lambda lines: lines[:1]), DATA_COMMANDS, r"no valid rows"),
    Case("UTF-16 CSV", lambda d: _write(d / "excel.csv", b"".join(real_fer_lines()[:4]).decode().encode("utf-16")),
         DATA_COMMANDS, r"UTF-16 text; save the CSV as UTF-8"),
    Case("truncated .csv.gz", fer_gzip("cut.csv.gz", lambda b: b[: len(b) // 2]), DATA_COMMANDS, GZIP_FAULT),
    Case(".csv.gz with a bad CRC", fer_gzip("crc.csv.gz", _flip_crc), DATA_COMMANDS, GZIP_FAULT),
    Case("FIFO named .csv", fifo("pipe.csv"), DATA_COMMANDS, r"not a regular file or a folder \(a FIFO\)"),
    Case("missing CSV", lambda d: d / "nosuch.csv", DATA_COMMANDS, r"no such file"),
    Case("folder without class folders", _no_class_folders, DATA_COMMANDS, r"no class folders with files found"),
    Case("empty FER+ votes file", fer_votes(lambda lines: []), FERPLUS_COMMANDS,
         r"votes\.csv: empty file, expected a FER\+ header", role="ferplus"),
    Case("FER+ votes not a number", fer_votes(_row(5, lambda r: r.replace(b",0,", b",x,", 1))), FERPLUS_COMMANDS,
         r"votes\.csv row 5 \(line 6\): \w+ votes 'x' is not a whole number", role="ferplus"),
    Case("FER+ file is a FER2013 CSV", fer_votes(lambda lines: real_fer_lines()), FERPLUS_COMMANDS,
         r"votes\.csv: vote columns .* differ from neutral,happiness", role="ferplus"),
    Case("FER+ file shorter than the CSV", fer_votes(lambda lines: lines[:11]), FERPLUS_COMMANDS,
         rf"votes\.csv: 10 rows, but .*small\.csv has row {DATA_ROWS}", role="ferplus"),
    Case("broken link in a tree", fer_tree(_broken_link), DATA_COMMANDS, r"broken symbolic link", 0, role="tree"),
    Case("link loop in a tree", fer_tree(_link_loop), DATA_COMMANDS, r"symbolic link loop", 0, role="tree"),
    Case("FIFO in a tree", fer_tree(fifo("pipe.png")), DATA_COMMANDS, r"not a regular file \(a FIFO\)", 0, role="tree"),
    Case("text named .png in a tree", fer_tree(_text_png), DATA_COMMANDS, r"not a readable image", 0, role="tree"),
]
CASES.extend(DATA_CASES)

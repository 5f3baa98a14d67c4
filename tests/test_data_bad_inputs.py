"""Bad and awkward input to the data layer, as a user meets it: real FER2013 rows cut into small files,
then damaged. Every fault is one line naming the file (and row and line), exit status 2, no traceback,
and no output file left half-written."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from _fer_small import assert_one_line_error, run_cli
from conftest import FERKIT
from ferkit.data import DataError, load_dataset, load_fer2013, load_folder_tree, write_fer2013, write_folder_tree
from ferkit.data import cache
from ferkit.data.csvio import MAX_LINE, CsvFile
from ferkit.errors import OutputError, UsageError

N_ROWS = 30


@pytest.fixture(scope="module")
def real(data_dir) -> dict:
    """The header and first N_ROWS data lines of the real FER2013 CSV (bytes, newline kept), and the
    matching lines of the FER+ votes file."""
    with gzip.open(data_dir / "fer2013.csv.gz", "rb") as fh:
        lines = [fh.readline() for _ in range(N_ROWS + 1)]
    votes = (data_dir / "fer2013new.csv").read_bytes().splitlines(keepends=True)[: N_ROWS + 1]
    return {"header": lines[0], "rows": lines[1:], "votes": votes}


def csv_bytes(real, rows=None, header=True) -> bytes:
    return (real["header"] if header else b"") + b"".join(real["rows"] if rows is None else rows)


def damaged(real, index: int, new_row: bytes) -> bytes:
    """The real rows with row `index` (0-based) replaced."""
    rows = list(real["rows"])
    rows[index] = new_row
    return csv_bytes(real, rows)


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (.name.*.tmp / .partial) an interrupted writer would leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".partial")))


def faces_total(stdout: str) -> int:
    """The total row of the counts table."""
    return int(re.search(r"total\W+(\d[\d,]*)", stdout).group(1).replace(",", ""))


def info(path, *extra):
    return run_cli("data", "info", path, *extra)


# ----------------------------------------------------------------------------- CSV text
def test_byte_order_mark_is_accepted(tmp_path, real):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_bytes(csv_bytes(real))
    bom.write_bytes(b"\xef\xbb\xbf" + csv_bytes(real))
    a, b = load_fer2013(plain, use_cache=False), load_fer2013(bom, use_cache=False)
    assert len(b) == N_ROWS and np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    r = info(bom)
    assert r.returncode == 0, r.stderr
    assert faces_total(r.stdout) == N_ROWS


def test_no_header_row_is_described_briefly(tmp_path, real):
    path = tmp_path / "noheader.csv"
    path.write_bytes(csv_bytes(real, header=False))
    r = info(path)
    assert_one_line_error(r, "noheader.csv", "no header row", "expected columns emotion,pixels[,Usage]")
    assert len(r.stderr) < 300  # the first row's 2,304 pixels are not printed


def test_utf16_csv_is_named(tmp_path, real):
    path = tmp_path / "excel.csv"
    path.write_bytes(csv_bytes(real, real["rows"][:3]).decode().encode("utf-16"))
    assert_one_line_error(info(path), "excel.csv", "UTF-16")


def test_non_utf8_row_is_named_and_skippable(tmp_path, real):
    bad_row = real["rows"][2].replace(b"Training", b"Tr\xe9ining")
    assert bad_row != real["rows"][2]
    path = tmp_path / "latin1.csv"
    path.write_bytes(damaged(real, 2, bad_row))
    assert_one_line_error(info(path), "latin1.csv row 3 (line 4)", "not UTF-8", "0xe9")
    r = info(path, "--skip-bad-rows")
    assert r.returncode == 0, r.stderr
    assert "1 skipped" in r.stdout and "row 3 (line 4)" in r.stdout and faces_total(r.stdout) == N_ROWS - 1
    faces = load_fer2013(path, on_error="skip", use_cache=False)
    assert 3 not in faces.ids.tolist() and len(faces) == N_ROWS - 1


def test_non_utf8_header_is_shown_escaped(tmp_path, real):
    path = tmp_path / "header.csv"
    path.write_bytes(b"\xffmotion,pixels,Usage\n" + b"".join(real["rows"][:2]))
    assert_one_line_error(info(path), "header.csv", "not UTF-8")


def test_field_over_csv_limit_is_named_and_skippable(tmp_path, real):
    row = real["rows"][3]
    huge = row.replace(b",", b"," + b"7 " * 70_000, 1)  # a pixels field of 140 KB
    path = tmp_path / "huge.csv"
    path.write_bytes(damaged(real, 3, huge))
    assert_one_line_error(info(path), "huge.csv row 4 (line 5)", "longer than 131,072 characters")
    r = info(path, "--skip-bad-rows")
    assert r.returncode == 0, r.stderr
    assert "row 4 (line 5)" in r.stdout and faces_total(r.stdout) == N_ROWS - 1


def test_endless_line_is_cut_and_named(tmp_path, real):
    path = tmp_path / "endless.csv"
    path.write_bytes(damaged(real, 1, b"3," + b"1" * (MAX_LINE + 10) + b",Training\n"))
    with pytest.raises(DataError, match=r"endless.csv row 2 \(line 3\): a line longer than"):
        load_fer2013(path, use_cache=False)
    faces = load_fer2013(path, on_error="skip", use_cache=False)
    assert len(faces) == N_ROWS - 1 and faces.ids.tolist()[:3] == [1, 3, 4]  # later rows keep their numbers


def test_rows_after_a_refused_row_keep_their_numbers(tmp_path, real):
    rows = list(real["rows"][:5])
    rows[1] = b'3,"unterminated ' + b"9" * 140_000 + b"\n"
    path = tmp_path / "quote.csv"
    path.write_bytes(csv_bytes(real, rows))
    with CsvFile(path) as f:
        seen = [(row_no, fault is None) for row_no, _line, _row, fault in f.rows()]
    assert seen[0] == (1, True) and seen[1] == (2, False)
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1))


@pytest.mark.parametrize("how", ["truncated", "corrupt", "bad crc"])
def test_damaged_gzip_names_file_and_last_row(tmp_path, real, how):
    data = bytearray(gzip.compress(csv_bytes(real)))
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "corrupt":
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0xA5
    else:
        data[-8] ^= 0xFF  # the CRC32 in the trailer
    path = tmp_path / "damaged.csv.gz"
    path.write_bytes(bytes(data))
    # Garbage inflated from a corrupt block may first show as a bad row; past the bad rows, the stream's
    # own check (or its end) is reported, with the rows read before it.
    assert_one_line_error(info(path), "damaged.csv.gz")
    r = info(path, "--skip-bad-rows")
    assert_one_line_error(r, "damaged.csv.gz: truncated or corrupt gzip (after row")
    with pytest.raises(DataError, match=r"after row (\d+)\)") as err:
        load_fer2013(path, on_error="skip", use_cache=False)
    rows_before = int(re.search(r"after row (\d+)", str(err.value)).group(1))
    if how == "bad crc":  # every row came through; the check at the end fails
        assert rows_before == N_ROWS
    if how == "truncated":
        assert rows_before < N_ROWS
    if how == "truncated":  # nothing garbled before the cut: the gzip fault comes first
        assert_one_line_error(info(path), "truncated or corrupt gzip")


def test_emotion_code_in_other_digits_is_a_bad_row(tmp_path, real):
    row = real["rows"][0]
    path = tmp_path / "digits.csv"
    path.write_bytes(damaged(real, 0, "²".encode() + row[1:]))
    assert_one_line_error(info(path), "digits.csv row 1 (line 2)", "emotion")


def test_fifo_or_missing_source_never_hangs(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert_one_line_error(info(fifo), "pipe.csv", "not a regular file")
    with pytest.raises(DataError, match="not a regular file"):
        load_fer2013(fifo)
    assert_one_line_error(info(tmp_path / "missing.csv"), "missing.csv")


# ----------------------------------------------------------------------------- FER+ votes
def test_empty_ferplus_file_is_one_line(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    (tmp_path / "votes.csv").write_bytes(b"")
    assert_one_line_error(info(src, "--ferplus", tmp_path / "votes.csv"), "votes.csv", "empty file")
    (tmp_path / "header_only.csv").write_bytes(real["votes"][0])
    assert_one_line_error(info(src, "--ferplus", tmp_path / "header_only.csv"), "header_only.csv", "0 rows")
    (tmp_path / "other.csv").write_bytes(csv_bytes(real))
    assert_one_line_error(info(src, "--ferplus", tmp_path / "other.csv"), "other.csv", "vote columns")


def test_bad_votes_row_is_named_and_skippable(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    votes = list(real["votes"])
    votes[5] = votes[5].replace(b",0,", b",x,", 1)
    votes[7] = b"Training,fer0000006.png,1,2\n"
    path = tmp_path / "votes.csv"
    path.write_bytes(b"".join(votes))
    assert_one_line_error(info(src, "--ferplus", path), "votes.csv row 5 (line 6)", "not a whole number")
    r = info(src, "--ferplus", path, "--skip-bad-rows")
    assert r.returncode == 0, r.stderr
    assert "votes.csv row 5 (line 6)" in r.stdout and "votes.csv row 7 (line 8)" in r.stdout
    good = tmp_path / "good.csv"
    good.write_bytes(b"".join(real["votes"]))
    whole = load_dataset(src, ferplus=good)
    skipped = load_dataset(src, ferplus=path, on_error="skip")
    assert set(skipped.ids.tolist()) == set(whole.ids.tolist()) - {5, 7}
    assert [where for where, _ in skipped.report.skipped] == ["votes.csv row 5 (line 6)", "votes.csv row 7 (line 8)"]


# ----------------------------------------------------------------------------- folder trees
@pytest.fixture()
def tree(tmp_path, real) -> Path:
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    write_folder_tree(load_fer2013(src, use_cache=False), tmp_path / "tree")
    return tmp_path / "tree"


def test_tree_odd_files_are_reported_and_skipped(tree):
    happy = tree / "train" / "happy"
    n = sum(1 for _ in tree.rglob("*.png"))
    (happy / "broken.png").symlink_to(tree / "no-such-file.png")
    (happy / "loop1.png").symlink_to("loop2.png")
    (happy / "loop2.png").symlink_to("loop1.png")
    os.mkfifo(happy / "pipe.png")
    (happy / "up").symlink_to(tree)  # a folder link back up: not followed
    r = info(tree)  # a FIFO that were opened would block here
    assert r.returncode == 0, r.stderr
    assert faces_total(r.stdout) == n and "4 skipped" in r.stdout
    faces = load_folder_tree(tree, use_cache=False)
    why = {os.path.basename(where): reason for where, reason in faces.report.skipped}
    assert "broken symbolic link" in why["broken.png"]
    assert why["loop1.png"] == why["loop2.png"] == "symbolic link loop"
    assert why["pipe.png"] == "not a regular file (a FIFO)"
    with pytest.raises(DataError, match="broken.png: broken symbolic link"):
        load_folder_tree(tree, on_error="raise", use_cache=False)


def test_tree_cache_sees_a_fixed_link(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    happy = tree / "train" / "happy"
    target = tmp_path / "later.png"
    (happy / "late.png").symlink_to(target)
    first = load_folder_tree(tree)
    assert any(w.endswith("late.png") for w, _ in first.report.skipped)
    shutil.copy(next(tree.rglob("*[0-9].png")), target)
    second = load_folder_tree(tree)
    assert len(second) == len(first) + 1 and not second.report.skipped


# ----------------------------------------------------------------------------- output that cannot be written
def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def run_limited(limit: int, *args) -> subprocess.CompletedProcess:
    """The CLI with a per-file size limit: writes past `limit` bytes fail (EFBIG) as on a full disk."""
    return subprocess.run([*FERKIT, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(limit))


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz"])
def test_full_disk_leaves_no_half_written_csv(tmp_path, real, name):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = run_limited(20_000, "data", "convert", src, out_dir / name)
    assert_one_line_error(r, f"cannot write {out_dir / name}", "File too large")
    assert "wrote" not in r.stdout
    assert list(out_dir.iterdir()) == []
    # Over an existing file (--force): the old file stays whole.
    old = out_dir / name
    write_fer2013(load_fer2013(src, use_cache=False).subset(np.arange(N_ROWS) < 2), old)
    before = old.read_bytes()
    r = run_limited(20_000, "data", "convert", src, old, "--force")
    assert_one_line_error(r, "cannot write")
    assert old.read_bytes() == before and leftovers(out_dir) == []


def test_full_disk_leaves_no_half_written_tree(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    faces = load_fer2013(src, use_cache=False)
    sizes = sorted(len(cv2.imencode(".png", img)[1]) for img in faces.images)
    limit = sizes[len(sizes) // 2]  # about half the faces fit
    r = run_limited(limit, "data", "convert", src, tmp_path / "tree")
    assert_one_line_error(r, "cannot write", str(tmp_path / "tree"), "File too large", "stopped after")
    assert "wrote" not in r.stdout
    assert not (tmp_path / "tree").exists() and leftovers(tmp_path) == []
    # Into a non-empty folder (--force) the faces already written stay, and none is a 0-byte file.
    dst = tmp_path / "existing"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    r = run_limited(limit, "data", "convert", src, dst, "--force")
    assert_one_line_error(r, "cannot write", "stopped after")
    assert (dst / "keep.txt").read_text() == "mine"
    assert all(p.stat().st_size > 0 for p in dst.rglob("*.png"))
    assert not [p for p in dst.rglob(".*") if p.name.endswith(".tmp")]


@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` unwritable for this user: mode 0555, or the immutable flag where we are root
    (root writes through permission bits)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root on a file system without the immutable flag: no folder is read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder_is_one_line(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    faces = load_fer2013(src, use_cache=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        for args in (["data", "convert", src, ro / "out.csv"], ["data", "convert", src, ro / "tree"],
                     ["data", "convert", src, ro / "deeper" / "tree"], ["explore", src, "-o", ro / "pictures"]):
            assert_one_line_error(run_cli(*args), "cannot write to output folder", str(ro))
        with pytest.raises(OutputError, match="cannot write"):
            write_fer2013(faces, ro / "direct.csv")
        with pytest.raises(OutputError, match="cannot write"):
            write_folder_tree(faces, ro / "direct")
        assert list(ro.iterdir()) == []


def test_destination_that_is_the_wrong_kind(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(run_cli("data", "convert", src, tmp_path / "a_file"), "a_file", "is a file")
    (tmp_path / "folder.csv").mkdir()
    assert_one_line_error(run_cli("data", "convert", src, tmp_path / "folder.csv"), "folder.csv", "is a folder")
    assert_one_line_error(run_cli("data", "convert", src, src), "small.csv", "--force")
    assert_one_line_error(run_cli("data", "convert", src, tmp_path / "a_file" / "tree"), "a_file", "is a file")
    assert (tmp_path / "a_file").read_text() == "x"


def test_bad_input_leaves_no_output(tmp_path, real):
    path = tmp_path / "bad.csv"
    path.write_bytes(damaged(real, 4, b"3,1 2 3,Training\n"))
    assert_one_line_error(run_cli("data", "convert", path, tmp_path / "tree"), "bad.csv row 5 (line 6)")
    assert_one_line_error(run_cli("data", "convert", path, tmp_path / "out.csv"), "bad.csv row 5 (line 6)")
    assert not (tmp_path / "tree").exists() and not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- options
def test_options_out_of_range(tmp_path, real):
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    r = run_cli("explore", src, "--per-class", "0", "-o", tmp_path / "pictures")
    assert r.returncode == 2 and "--per-class" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pictures").exists()
    assert_one_line_error(run_cli("data", "info", src, "--classes", "happy,grumpy"), "--classes", "grumpy")
    with pytest.raises(UsageError):
        from ferkit.classes import parse_class_list

        parse_class_list("grumpy")


# ----------------------------------------------------------------------------- the parse cache
def test_cache_is_pickle_free_atomic_and_self_checking(tmp_path, real, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "some_bad.csv"
    path.write_bytes(damaged(real, 6, b"3,1 2 3,Training\n"))
    fresh = load_fer2013(path, on_error="skip", use_cache=False)
    stored = load_fer2013(path, on_error="skip")
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"  # no temporaries left
    with np.load(entries[0], allow_pickle=False) as z:  # raises if anything in it needs pickle
        assert {k: z[k].dtype.hasobject for k in z.files} == dict.fromkeys(z.files, False)
    again = load_fer2013(path, on_error="skip")
    for faces in (stored, again):
        assert np.array_equal(faces.images, fresh.images) and np.array_equal(faces.ids, fresh.ids)
        assert faces.report.skipped == fresh.report.skipped == [
            ("some_bad.csv row 7 (line 8)", "3 pixel values, expected 2304")]
    # A damaged entry is parsed again, not trusted; so is one that lacks an array.
    entries[0].write_bytes(entries[0].read_bytes()[:500])
    assert np.array_equal(load_fer2013(path, on_error="skip").images, fresh.images)
    key = f"{cache.fingerprint(path)}|skip"
    cache.store("fer2013", key, {"images": fresh.images})
    assert cache.load("fer2013", key, ("images", "labels")) is None
    assert np.array_equal(load_fer2013(path, on_error="skip").labels, fresh.labels)
    # Raise and skip modes are separate entries.
    with pytest.raises(DataError, match="row 7"):
        load_fer2013(path)
    with pytest.raises(TypeError):
        cache.store("fer2013", "x", {"bad": np.array([object()])})


def test_cache_never_holds_a_torn_entry_on_a_full_disk(tmp_path, real):
    """The parse cache cannot be written (EFBIG): the command still works and leaves no temporary."""
    src = tmp_path / "small.csv"
    src.write_bytes(csv_bytes(real))
    cache_dir = tmp_path / "cache"
    r = subprocess.run([*FERKIT, "data", "info", str(src)], capture_output=True, text=True, timeout=300,
                       preexec_fn=_file_size_limit(10_000), env={**os.environ, "FERKIT_CACHE": str(cache_dir)})
    assert r.returncode == 0, r.stderr
    assert [p.name for p in cache_dir.iterdir()] == []

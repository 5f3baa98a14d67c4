"""Reading and writing CSV text safely: plain or gzip, UTF-8 with or without a byte-order mark.

`CsvFile` yields data rows with their row and line numbers and, for a row that cannot be used as
text, what is wrong with it (bytes that are not UTF-8, a field over the csv module's limit, a line
longer than `MAX_LINE`), so callers can stop at the row or skip and count it. A truncated or corrupt
gzip stream, or a file that cannot be read, is one `DataError` naming the file and the last good row.
`atomic_csv` writes a CSV to a temporary file and renames it over the target only once it is complete.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

from ferkit.errors import DataError, OutputError
from ferkit.fileio import temp_beside

# A line longer than this is cut and its row reported; memory stays bounded whatever the file holds.
MAX_LINE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def printable(text: str, width: int = 40) -> str:
    """A field as a user can read it: undecodable bytes as \\xNN, cut to `width` characters."""
    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _not_utf8(row: list[str]) -> str | None:
    """Where a row holds bytes that are not UTF-8 (decoded as surrogates), or None."""
    if "".join(row).isascii():
        return None
    for i, field in enumerate(row):
        try:
            field.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(field[exc.start]) - 0xDC00
            return f"not UTF-8 text (byte 0x{byte:02x} in field {i + 1})"
    return None


def _csv_fault(exc: csv.Error) -> str:
    text = str(exc)
    if "field limit" in text:
        return f"a field is longer than {csv.field_size_limit():,} characters"
    return f"malformed CSV ({text})"


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


def file_kind(mode: int) -> str:
    """'a FIFO', 'a socket', ... for a stat mode that is not a regular file."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def regular_file(path: Path) -> Path:
    """`path` if it names a regular file (after following links); DataError otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file ({file_kind(st.st_mode)})")
    return path


class CsvFile:
    """One CSV file opened for reading: `header` is its first row, `rows()` the data rows after it.

    Use as a context manager. Rows come as (row_no, line_no, fields, fault): row_no counts data rows
    from 1, line_no is the file line the row ends on, fault is None or why the row is not usable text.
    """

    def __init__(self, path: str | Path):
        self.path = regular_file(Path(path))
        self.rows_read = 0
        self._long_line = False
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(2)
            self._gzip = magic == _GZIP_MAGIC
            raw = gzip.open(self.path, "rb") if self._gzip else open(self.path, "rb")
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        if not self._gzip and magic in _UTF16_BOMS:
            raw.close()
            raise DataError(f"{self.path}: UTF-16 text; save the CSV as UTF-8")
        self._text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        self._reader = csv.reader(self._lines())
        self.header = self._header()

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._text.close()

    def _lines(self) -> Iterator[str]:
        while True:
            line = self._text.readline(MAX_LINE)
            if not line:
                return
            if len(line) == MAX_LINE and not line.endswith(("\n", "\r")):
                self._long_line = True
                while True:  # drop the rest of the physical line
                    rest = self._text.readline(MAX_LINE)
                    if not rest or rest.endswith(("\n", "\r")):
                        break
                line += "\n"
            yield line

    def _next(self) -> list[str] | str | None:
        """The next record, a fault string for a record the csv module refused, or None at the end."""
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            return _csv_fault(exc)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            raise DataError(f"{self.path}: truncated or corrupt gzip (after row {self.rows_read})") from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read after row {self.rows_read} ({exc.strerror or exc})") from None

    def _fault(self, record: list[str] | str) -> str | None:
        long_line, self._long_line = self._long_line, False
        if long_line:
            return f"a line longer than {MAX_LINE:,} characters"
        if isinstance(record, str):
            return record
        return _not_utf8(record)

    def _header(self) -> list[str] | None:
        record = self._next()
        if record is None:
            return None
        fault = self._fault(record)
        if fault is not None:
            raise DataError(f"{self.path.name} line 1 (header): {fault}")
        return [h.strip() for h in record]

    def rows(self) -> Iterator[tuple[int, int, list[str] | None, str | None]]:
        while True:
            record = self._next()
            if record is None:
                return
            self.rows_read += 1
            fault = self._fault(record)
            yield self.rows_read, self._reader.line_num, (None if isinstance(record, str) else record), fault


class _Utf8Sink:
    """What csv.writer needs (a `write(str)`), encoding to a binary stream without a text wrapper."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text.encode("utf-8"))


@contextlib.contextmanager
def atomic_csv(path: str | Path) -> Iterator[csv.writer]:
    """A csv.writer onto a temporary file beside `path` (gzip when the name ends in .gz). On a clean exit
    the file is synced and renamed over `path`; on any failure it is removed and `path` is untouched.
    Failures to write become one OutputError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = temp_beside(path)
        with open(fd, "wb") as raw:
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else raw
            try:
                yield csv.writer(_Utf8Sink(stream))
                if stream is not raw:
                    stream.close()  # writes the gzip trailer
            except BaseException:
                if stream is not raw:
                    with contextlib.suppress(Exception):
                        stream.close()
                raise
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        tmp = None
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

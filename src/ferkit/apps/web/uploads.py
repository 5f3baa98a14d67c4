"""Receiving an uploaded file, as a multipart part or as the raw request body, without holding it in memory.

A multipart file part is spooled by Starlette (memory up to 1 MB, then a temporary file); a raw body is
streamed in chunks into a spooled file of ours or straight into its destination. The bytes are read
whole only where they are decoded, inside the bounded inference pool, so many uploads in flight cost
disk, not memory.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import anyio
from fastapi import Request
from starlette.datastructures import UploadFile

from ferkit.apps.web.errors import STORAGE_ERRNOS, ApiError
from ferkit.errors import OutputError

MB = 1024 * 1024
SPOOL_IN_MEMORY = 1 * MB  # a raw body larger than this goes to a temporary file in the work folder
RAW_BODY = "the request body"


def display_name(name: str | None) -> str:
    name = Path(name or "").name.replace("\x00", "")
    return "".join(ch for ch in name if ch.isprintable())[:120]


class Upload:
    """An uploaded file: a seekable binary file, the name to show in messages, and whether a client file
    name came with it (multipart) or it is the raw body."""

    def __init__(self, file: BinaryIO, name: str, from_form: bool):
        self.file, self.name, self.from_form = file, name, from_form

    def head(self, n: int = 512) -> bytes:
        self.file.seek(0)
        data = self.file.read(n)
        self.file.seek(0)
        return data

    def read(self) -> bytes:
        """All of it (call in a worker thread: it may come from disk)."""
        self.file.seek(0)
        return self.file.read()

    def copy_to(self, path: Path) -> None:
        """Write it to `path` (call in a worker thread)."""
        self.file.seek(0)
        with storage_errors():
            with open(path, "wb") as dst:
                shutil.copyfileobj(self.file, dst, MB)

    def close(self) -> None:
        self.file.close()


@contextlib.contextmanager
def storage_errors():
    """A write that fails for want of room (full disk, quota, file-size cap) becomes OutputError (507)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, OutputError) or exc.errno not in STORAGE_ERRNOS:
            raise
        raise OutputError(f"cannot store an upload: {exc.strerror or errno.errorcode.get(exc.errno)}") from None


def _write(fh: BinaryIO, chunk: bytes) -> None:
    with storage_errors():
        fh.write(chunk)


async def stream_body(request: Request, fh: BinaryIO) -> int:
    """Copy the raw request body into `fh` chunk by chunk, as it arrives; the bytes written."""
    n = 0
    async for chunk in request.stream():
        if chunk:
            await anyio.to_thread.run_sync(_write, fh, chunk)
            n += len(chunk)
    return n


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "multipart/form-data"


async def form_file(request: Request) -> Upload:
    """The file part of a multipart body (any part name; `file`, `image` or `video` first)."""
    form = await request.form(max_files=1, max_fields=16)
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise ApiError(400, "the multipart body has no file part: send the file as a part named 'file'", "no_file")
    f = next((v for k, v in files if k in ("file", "image", "video")), files[0][1])
    return Upload(f.file, display_name(f.filename) or "the uploaded file", from_form=True)


async def receive_upload(request: Request, spool_dir: Path) -> Upload:
    """The uploaded file: the multipart file part, or else the raw body (whatever type it declares:
    curl --data-binary says form-urlencoded). Close it, and the request, when done."""
    if is_multipart(request):
        return await form_file(request)
    with storage_errors():
        fh = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=spool_dir)
    try:
        await stream_body(request, fh)
    except BaseException:
        fh.close()
        raise
    return Upload(fh, RAW_BODY, from_form=False)

"""Files that ship inside the ferkit package (see SOURCES.md beside this file for their origin and licence)."""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import DataError

DEMO_PHOTO = "astronaut.jpg"


def demo_photo() -> Path:
    """The bundled demo photo: Eileen Collins, a public-domain NASA portrait (512x512 JPEG)."""
    path = Path(__file__).with_name(DEMO_PHOTO)
    if not path.is_file():
        raise DataError(f"{path}: the demo photo is missing from this ferkit install; reinstall ferkit")
    return path

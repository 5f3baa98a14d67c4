"""The RESULTS folder: Parquet part files written atomically, one status file per source, job.json.

    RESULTS/job.json                    the settings every part was made with (a rerun must match them)
    RESULTS/faces/KEY-CHUNK.parquet     face rows of one source (an image: chunk 00000; a video: one file
                                        per `chunk` frames, in order)
    RESULTS/status/KEY.parquet          one row: the source's status (written last: the commit)

KEY is `sources.source_key(path)`, so a rerun writes the very same names: a part written twice replaces
itself (temp file + rename, `ferkit.fileio`), and nothing is ever duplicated. A video's part files carry
in their Parquet metadata where the next part starts and the face tracker's state, so a killed job goes
on from its last part and gives the rows an uninterrupted run gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ferkit.batch.settings import Settings
from ferkit.errors import DataError, UsageError
from ferkit.fileio import atomic_write_bytes, atomic_write_json, ensure_dir

JOB_FILE = "job.json"
FACES, STATUS = "faces", "status"
META_KEY = b"ferkit"
BOX = ("x1", "y1", "x2", "y2")
FIXED = ("source", "frame", "time", "track", "face", *BOX, "score", "label")  # then one column per class, model, card
STATUS_COLUMNS = ("source", "kind", "status", "reason", "faces", "frames", "seconds")


def pa():
    import pyarrow

    return pyarrow


def faces_schema(classes: tuple[str, ...]):
    p = pa()
    clash = set(classes) & {*FIXED, "model", "card_sha256"}
    if clash:
        raise UsageError(f"the model's class names {sorted(clash)} clash with columns of the results table")
    fields = [("source", p.string()), ("frame", p.int64()), ("time", p.float64()), ("track", p.int64()),
              ("face", p.int32()), *((b, p.float32()) for b in BOX), ("score", p.float32()), ("label", p.string()),
              *((c, p.float32()) for c in classes), ("model", p.string()), ("card_sha256", p.string())]
    return p.schema(fields)


def status_schema():
    p = pa()
    return p.schema([("source", p.string()), ("kind", p.string()), ("status", p.string()), ("reason", p.string()),
                     ("faces", p.int64()), ("frames", p.int64()), ("seconds", p.float64())])


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa().BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class Store:
    """One RESULTS folder. Safe to use from many processes at once: every file is written whole, by name."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.faces_dir, self.status_dir = self.root / FACES, self.root / STATUS

    # -- the job's settings ---------------------------------------------------------------------------
    def check(self, settings: Settings, overwrite: bool = False) -> None:
        """Refuse (before any work) a folder of other files, or results made with other settings."""
        if overwrite or not self.root.exists():
            return
        if not self.root.is_dir():
            ensure_dir(self.root)  # the error that names a file in the way
        if (self.root / JOB_FILE).is_file():
            diffs = self.settings().differences(settings)
            if diffs:
                raise UsageError(f"{self.root}: holds results made with other settings ({'; '.join(diffs)}); "
                                 "write to a new folder, or pass --overwrite to start again")
        elif any(self.root.iterdir()):
            raise UsageError(f"{self.root}: is a folder of other files, not ferkit results; name a new or empty folder")

    def open(self, settings: Settings, overwrite: bool = False) -> None:
        """Create the folder (emptied of earlier results with `overwrite`) and record the settings."""
        self.check(settings, overwrite)
        ensure_dir(self.root)
        if overwrite:
            for sub in (self.faces_dir, self.status_dir):
                shutil.rmtree(sub, ignore_errors=True)
        ensure_dir(self.faces_dir), ensure_dir(self.status_dir)
        atomic_write_json(self.root / JOB_FILE, {"format": "ferkit-analyze", "version": 1,
                                                 "settings": settings.to_json()})

    def settings(self) -> Settings:
        job = self.root / JOB_FILE
        try:
            data = json.loads(job.read_text())
            return Settings.from_json(data["settings"])
        except FileNotFoundError:
            raise DataError(f"{self.root}: not a ferkit results folder (no {JOB_FILE}; made by `ferkit analyze`)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{job}: unreadable ({exc})") from None

    # -- paths ----------------------------------------------------------------------------------------
    def part_path(self, key: str, chunk: int) -> Path:
        return self.faces_dir / f"{key}-{chunk:05d}.parquet"

    def status_path(self, key: str) -> Path:
        return self.status_dir / f"{key}.parquet"

    def parts(self, key: str) -> list[Path]:
        return sorted(self.faces_dir.glob(f"{key}-*.parquet"))

    # -- writing --------------------------------------------------------------------------------------
    def write_part(self, key: str, chunk: int, columns: dict, schema, meta: dict | None = None) -> Path:
        table = pa().table(columns, schema=schema)
        if meta is not None:
            table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        return atomic_write_bytes(self.part_path(key, chunk), _parquet_bytes(table))

    def write_status(self, key: str, status: dict) -> Path:
        table = pa().table({c: [status.get(c)] for c in STATUS_COLUMNS}, schema=status_schema())
        return atomic_write_bytes(self.status_path(key), _parquet_bytes(table))

    def drop_parts(self, key: str) -> None:
        """Remove a failed source's part files, so the faces table never holds rows of a failed source."""
        for p in self.parts(key):
            p.unlink(missing_ok=True)

    # -- reading back ---------------------------------------------------------------------------------
    def part_meta(self, path: Path) -> dict | None:
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(path).metadata or {}
            return json.loads(meta[META_KEY])
        except Exception:  # noqa: BLE001 -- an unreadable part is no resume point; it is simply redone
            return None

    def resume_point(self, key: str) -> dict | None:
        """The metadata of the last of a video's consecutive parts 0, 1, 2, ... (None: start at frame 0)."""
        done = {int(p.stem.rsplit("-", 1)[1]) for p in self.parts(key) if p.stem.rsplit("-", 1)[1].isdigit()}
        last = None
        k = 0
        while k in done:
            meta = self.part_meta(self.part_path(key, k))
            if meta is None or meta.get("chunk") != k:
                break
            last, k = meta, k + 1
        return last

    def done_keys(self) -> set[str]:
        """Keys of the sources whose status says done (the ones a rerun skips)."""
        import pyarrow.parquet as pq

        done = set()
        for p in self.status_dir.glob("*.parquet"):
            try:
                if pq.read_table(p, columns=["status"]).column("status")[0].as_py() == "done":
                    done.add(p.stem)
            except Exception:  # noqa: BLE001 -- a torn status file cannot happen (rename); a foreign one is redone
                continue
        return done

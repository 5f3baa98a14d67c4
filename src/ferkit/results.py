"""`ferkit.read_results(RESULTS)`: the faces table that `ferkit analyze` wrote, as a pandas DataFrame.

    >>> import ferkit
    >>> faces = ferkit.read_results("results")                    # one row per face per image or frame
    >>> status = ferkit.read_results("results", table="status")   # one row per source: done or failed, why
    >>> faces.groupby("source")["label"].agg(lambda s: s.mode()[0])

Faces columns: source, frame, time (s; empty for images), track (a video's face track id; empty for
images), face (its index in the frame, reading order), x1, y1, x2, y2 (box in pixels), score (detector),
label, one probability column per class of the model, model, card_sha256. Rows are sorted by source,
frame and face. Status columns: source, kind (image/video), status (done/failed), reason, faces, frames
(analysed), seconds.
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import UsageError, require_extra

TABLES = ("faces", "status")


def read_arrow(results: str | Path, table: str = "faces", columns: list[str] | None = None):
    """The table as a pyarrow Table (all its part files), sorted like `read_results`."""
    require_extra("analyze", "ferkit.read_results", "pyarrow")
    import pyarrow.dataset as ds

    from ferkit.batch.store import Store, faces_schema, status_schema

    if table not in TABLES:
        raise UsageError(f"table {table!r}: choose {' or '.join(TABLES)}")
    store = Store(results)
    settings = store.settings()  # fails clearly when RESULTS is not a results folder
    schema = faces_schema(settings.classes) if table == "faces" else status_schema()
    folder = store.faces_dir if table == "faces" else store.status_dir
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if files:
        data = ds.dataset(files, schema=schema, format="parquet").to_table(columns=columns)
    else:
        data = schema.empty_table() if columns is None else schema.empty_table().select(columns)
    data = data.replace_schema_metadata(None)
    keys = [k for k in (("source", "frame", "face") if table == "faces" else ("source",)) if k in data.column_names]
    return data.sort_by([(k, "ascending") for k in keys]) if keys and len(data) else data


def read_results(results: str | Path, table: str = "faces", columns: list[str] | None = None):
    """RESULTS (a folder `ferkit analyze` wrote) -> a pandas DataFrame of `table` ("faces" or "status").

    Whole-number columns that may be empty (track) keep pandas' nullable integers, so ids stay ids.
    """
    require_extra("analyze", "ferkit.read_results", "pyarrow", "pandas")
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
    frame = read_arrow(results, table, columns).to_pandas(types_mapper=mapping.get)
    return frame.reset_index(drop=True)

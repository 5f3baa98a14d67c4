"""`ferkit report RESULTS -o DIR`: a per-source summary (CSV) and an emotions-over-time plot per video.

    DIR/sources.csv                     one row per source: status, reason, faces, frames, seconds, tracks,
                                        the most frequent label and the mean probability of each class
    DIR/plots/NAME-KEY.emotions.png     each video with faces: one panel per face track (the longest six),
                                        each class's probability over time (moving average, weight 0.4 on
                                        the newest analysed frame, as `ferkit video` smooths)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferkit.batch.sources import source_key
from ferkit.fileio import atomic_write_bytes, atomic_write_text, ensure_dir

SMOOTHING = 0.4


@dataclass
class Report:
    csv: Path
    plots: list[Path] = field(default_factory=list)
    sources: int = 0


def _plot_name(source: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(source).stem)[:60]
    return f"{stem}-{source_key(source)[:8]}.emotions.png"


def write_report(results: str | Path, out: str | Path) -> Report:
    from ferkit.batch.store import Store
    from ferkit.results import read_results
    from ferkit.runtime.charts import timeline_chart

    classes = list(Store(results).settings().classes)
    status = read_results(results, table="status")
    faces = read_results(results, columns=["source", "time", "track", "label", *classes])
    out = ensure_dir(out)
    summary = status.set_index("source")
    by_source = faces.groupby("source", sort=True)
    summary["tracks"] = by_source["track"].nunique().reindex(summary.index).astype("Int64")
    summary["main_label"] = by_source["label"].agg(lambda s: s.value_counts().index[0]).reindex(summary.index)
    means = by_source[classes].mean().reindex(summary.index).round(4)
    summary = summary.join(means.add_prefix("mean_"))
    summary.loc[summary["kind"] == "image", "tracks"] = None
    plots: dict[str, str] = {}
    report = Report(out / "sources.csv", sources=len(summary))
    videos = faces[faces["track"].notna()]
    for source, rows in videos.groupby("source", sort=True):
        times, probs = {}, {}
        for track, t in rows.groupby("track", sort=True):
            t = t.sort_values("time")
            times[int(track)] = t["time"].to_numpy(float)
            probs[int(track)] = t[classes].ewm(alpha=SMOOTHING).mean().to_numpy(float)
        png = timeline_chart(times, probs, classes, None, title=f"Emotions over time — {Path(source).name}")
        path = atomic_write_bytes(ensure_dir(out / "plots") / _plot_name(source), png)
        plots[source] = str(path.relative_to(out))
        report.plots.append(path)
    summary["plot"] = summary.index.map(lambda s: plots.get(s, ""))
    atomic_write_text(report.csv, summary.reset_index().to_csv(index=False))
    return report

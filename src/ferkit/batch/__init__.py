"""Batch analysis: every face in many images and videos -> a Parquet dataset, resumable, on a local process
pool or a Ray cluster (`ferkit analyze SOURCES... -o RESULTS`; read it back with `ferkit.read_results`).

- `sources`: SOURCES (files, folders, patterns, list files) -> the files to analyse
- `settings`: what the job analyses with (model, detector, frame sampling), kept in RESULTS/job.json
- `job`: the work on one source (an image, or a video streamed frame by frame)
- `store`: the RESULTS layout, atomic part files and the status table
- `local`, `ray_backend`: where the work runs; `runner`: one job from start to end
- `report`: a per-source summary and emotions-over-time plots from RESULTS

Like the run time, nothing here imports torch.
"""

from ferkit.batch.runner import Summary, run_job

__all__ = ["Summary", "run_job"]

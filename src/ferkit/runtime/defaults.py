"""Run-time defaults shared by the CLI, the Python API and the web server (no imports: the CLI reads
them to show its options without loading OpenCV).

Detection runs on the image scaled down to this long side, in pixels: `DETECT_SIZE_PHOTO` for photos
(`ferkit predict`, `chart`, `demo`, `ferkit.analyze`, the server's photo endpoint) and
`DETECT_SIZE_FRAMES` for frames of video files, streams and webcams (speed first). Each command's
`--detect-size` overrides them.
"""

DETECT_SIZE_PHOTO = 960
DETECT_SIZE_FRAMES = 480

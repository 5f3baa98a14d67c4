"""Typed request/response models of the JSON API: the OpenAPI document at /openapi.json is the contract."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a short machine code and a sentence saying what was wrong."""

    error: str = Field(description="Machine-readable code, e.g. 'unsupported_media_type'.", examples=["payload_too_large"])
    detail: str = Field(description="What was wrong, for a person.", examples=["upload is 31.2 MB; the limit is 20 MB"])
    status: int = Field(description="The HTTP status code, repeated.", examples=[413])


class Face(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in image pixels.")
    score: float = Field(ge=0, description="Face detector confidence.")
    label: str = Field(description="The most probable expression (one of the model's classes).")
    confidence: float = Field(ge=0, le=1, description="Probability of `label`.")
    probabilities: dict[str, float] = Field(description="Probability of each class, in the model's class order.")
    landmarks: list[list[float]] | None = Field(
        default=None, description="Five (x, y) points: eyes, nose tip, mouth corners (CenterFace only).")
    track_id: int | None = Field(default=None, description="Same face across frames (WebSocket and videos).")


class Timings(BaseModel):
    decode: float = Field(description="Milliseconds to decode the image.")
    analyze: float = Field(description="Milliseconds for detection + classification.")


class PredictResponse(BaseModel):
    model: str = Field(description="Model name (see GET /api/v1/model).")
    detector: str
    width: int = Field(description="Image width in pixels, EXIF orientation applied.")
    height: int
    classes: list[str]
    faces: list[Face] = Field(description="Faces left to right; empty when none was found.")
    timings_ms: Timings
    annotated_image: str | None = Field(
        default=None, description="With ?annotate=true: the image with boxes and labels, as a data: URL (JPEG).")


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class VideoFile(str, Enum):
    video = "video"
    csv = "csv"
    plot = "plot"


class VideoResult(BaseModel):
    frames: int = Field(description="Frames read and written.")
    analysed: int = Field(description="Frames run through detection and classification.")
    fps: float = Field(description="Frame rate of the video.")
    faces: int = Field(description="Face rows in the CSV.")
    tracks: int = Field(description="Distinct faces tracked across frames.")
    seconds: float = Field(description="Processing wall time.")
    labels: dict[str, int] = Field(description="Analysed face-frames per (smoothed) label.")
    video_url: str = Field(description="The annotated video (H.264 MP4).")
    csv_url: str = Field(description="Per-frame CSV of every face's box and probabilities.")
    plot_url: str = Field(description="Emotions-over-time chart (PNG).")


class VideoJob(BaseModel):
    id: str
    status: JobStatus
    filename: str = Field(description="The uploaded file's name, as the client gave it (display only).")
    progress: float | None = Field(
        default=None, ge=0, le=1, description="Fraction done; null while the frame count is unknown.")
    frames_done: int = 0
    frames_total: int = Field(default=0, description="Frames the file announces (0: unknown).")
    created: float = Field(description="Unix time the job was created.")
    finished: float | None = None
    expires: float | None = Field(default=None, description="Unix time after which the job and its files are deleted.")
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    result: VideoResult | None = None
    url: str = Field(description="This job's status URL.")


class ModelInfo(BaseModel):
    name: str
    classes: list[str]
    architecture: str
    file: str = Field(description="The ONNX file's name (the model's; its card sits beside it).")
    runs: str = Field(description="The ONNX file that runs: the model's, or its int8 file where this machine runs "
                                  "that faster.")
    precision: str = Field(description="fp32 or int8: what `runs` computes in.")
    detector: str = Field(description="The face detector in use.")
    tta: str = Field(description="Test-time augmentation for photos (/predict): the card's.")
    live_tta: str = Field(description="Test-time augmentation for frames (live WebSocket, MJPEG streams, video "
                                      "jobs): the card's, capped at flip for speed.")
    input: dict[str, Any]
    output: dict[str, Any]
    metrics: dict[str, Any]
    training: dict[str, Any]
    notes: str


class JobCounts(BaseModel):
    queued: int
    running: int
    finished: int


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
    model: str
    detector: str
    uptime_s: float
    jobs: JobCounts
    streams: int = Field(description="MJPEG streams being served.")


class Limits(BaseModel):
    max_upload_mb: float = Field(description="Largest image upload (and WebSocket frame).")
    max_video_mb: float = Field(description="Largest video upload.")
    max_pixels: int = Field(description="Largest decoded image, in pixels.")
    max_video_frames: int = Field(description="Frames of a video that are processed; the rest is left out.")

"""The estimator interface every backend implements: frames + spatial questions in, metric answers out.

Backends (``vlm``: a vision-language model in this process; ``geometric``: detection + metric depth lifted
to 3D; ``remote``: a vision-language model behind an OpenAI-compatible server) differ only in how they
answer; nodes, the affordance chain and the annotator talk to this interface alone. Building a backend
imports torch (or the openai client) lazily.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spatialvlm_ros.params import BACKENDS, DEPTH_SOURCES, DEVICES, DTYPES, IMAGE_FORMATS
from spatialvlm_ros.spatial.distance_text import parse_distance

# distance: between two objects' centres; gap_width: free space between two objects; width/height: of
# object_a alone (object_b is "").
QUERY_KINDS = ("distance", "gap_width", "width", "height")
SINGLE_OBJECT_KINDS = ("width", "height")


@dataclass(frozen=True)
class SpatialQuery:
    """One metric question about two objects in a frame.

    ``text`` is what a VLM is asked; ``kind`` and the object names let a geometric backend answer
    the same question without reading the text.
    """

    kind: str
    object_a: str
    object_b: str
    text: str

    def __post_init__(self) -> None:
        if self.kind not in QUERY_KINDS:
            raise ValueError(f"query kind {self.kind!r} is not known; accepted: {', '.join(QUERY_KINDS)}")
        if not self.text.strip():
            raise ValueError("a query needs question text")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera intrinsics in pixels (from sensor_msgs/CameraInfo K)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def intrinsics_from_camera_info(msg: Any) -> Intrinsics | None:
    """Pinhole intrinsics from sensor_msgs/CameraInfo fields; None for an uncalibrated camera (zeros)."""
    k = msg.k
    fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    if fx <= 0 or fy <= 0 or msg.width == 0 or msg.height == 0:
        return None
    return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=int(msg.width), height=int(msg.height))


@dataclass
class Frame:
    """What a backend may look at: the colour image, and optionally aligned metric depth and intrinsics."""

    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    intrinsics: Intrinsics | None = None


@dataclass
class Estimate:
    """The answer to one query on one frame. ``value_m`` is None when no distance could be read,
    and ``reason`` then says why; it is never filled with a guess.

    ``details`` carries what a backend measured beside the value (the geometric backend: both
    distances, 3D positions and sizes, where depth and intrinsics came from); None when it has nothing.
    """

    query: SpatialQuery
    value_m: float | None
    raw_answers: list[str] = field(default_factory=list)
    sample_values_m: list[float | None] = field(default_factory=list)
    reason: str | None = None
    details: dict[str, Any] | None = None
    # The measured objects' pixel masks ("a", "b": (H, W) bool) when the detector gave masks; for the
    # debug image only, never serialized.
    masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.query.kind,
            "question": self.query.text,
            "object_a": self.query.object_a,
            "object_b": self.query.object_b,
            "value_m": self.value_m,
            "raw_answers": list(self.raw_answers),
            "sample_values_m": list(self.sample_values_m),
            "reason": self.reason,
            "details": self.details,
        }


class Estimator(Protocol):
    """Answers spatial queries on frames. Implementations batch internally."""

    backend: str
    model_name: str

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        """One Estimate per (frame, query), in order, each combining ``samples`` sampled answers.

        Never raises for an unanswerable query: the Estimate says why instead.
        """
        ...

    def close(self) -> None:
        """Free the model (GPU memory)."""
        ...

# Optional attributes a backend may have (read with getattr): ``concurrent`` (True: estimate() may run
# in several threads at once, as the remote backend's does), ``max_in_flight`` (requests it keeps in
# flight) and ``problem`` (why it cannot answer right now, e.g. an unreachable server; None when fine).


def user_message(question: str, image_part: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat put to a VLM: one user turn, the image then the question (shared by the in-process and
    the remote backend, so both ask exactly the same thing)."""
    return [{"role": "user", "content": [image_part, {"type": "text", "text": question}]}]


def model_image(rgb: np.ndarray, max_pixels: int) -> Any:
    """The frame as the model sees it: downscaled to at most ``max_pixels`` (0: as is), as a PIL image."""
    from PIL import Image

    from spatialvlm_ros.spatial.imaging import resize_max_pixels

    return Image.fromarray(np.ascontiguousarray(resize_max_pixels(rgb, max_pixels)))


def combine_answers(query: SpatialQuery, raw_answers: Sequence[str]) -> Estimate:
    """Parse each sampled answer and combine the readable ones by their median.

    The median rather than the paper's mean: one wild sample (a "50 m" among "0.4 m") should not
    move the reward.
    """
    values = [parse_distance(text) for text in raw_answers]
    numbers = [v for v in values if v is not None and math.isfinite(v)]
    if not numbers:
        shown = raw_answers[0][:80] if raw_answers else ""
        return Estimate(query, None, list(raw_answers), values,
                        reason=f"no distance in the model's answer: {shown!r}")
    return Estimate(query, float(statistics.median(numbers)), list(raw_answers), values)


# model.* values that say where and how the model runs, not what it answers: a batch job's earlier rows
# stay comparable when they change between runs (the annotator's and the data engine's fingerprints).
RUNTIME_MODEL_PARAMS = ("model.device", "model.cpu_threads", "model.base_url", "model.api_key_env",
                        "model.timeout_s", "model.retries", "model.max_in_flight")


@dataclass(frozen=True)
class ModelConfig:
    """The model group of parameters (``model.*``), validated on construction."""

    backend: str = "vlm"
    name_or_path: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    device: str = "auto"
    dtype: str = "auto"
    max_image_pixels: int = 401408
    max_new_tokens: int = 32
    temperature: float = 0.7
    seed: int = 0
    trust_remote_code: bool = False
    # The geometric backend (see params.MODEL_PARAMS for what each means).
    detector: str = "google/owlv2-base-patch16-ensemble"
    detector_threshold: float = 0.1
    depth_model: str = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
    depth_source: str = "auto"
    fallback_hfov_deg: float = 60.0
    segmenter: str = "none"
    cpu_threads: int = 0  # torch intra-op threads on the CPU (0: torch's default); cpu_runtime.py
    # The remote backend (see params.MODEL_PARAMS).
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = ""
    timeout_s: float = 10.0
    retries: int = 0
    max_in_flight: int = 1
    image_format: str = "png"
    extra_body: str = ""

    def __post_init__(self) -> None:
        for name, value, accepted in (
            ("model.backend", self.backend, BACKENDS),
            ("model.device", self.device, DEVICES),
            ("model.dtype", self.dtype, DTYPES),
            ("model.depth_source", self.depth_source, DEPTH_SOURCES),
            ("model.image_format", self.image_format, IMAGE_FORMATS),
        ):
            if value not in accepted:
                raise ValueError(f"{name}={value!r} is not accepted; accepted: {', '.join(accepted)}")
        if not self.name_or_path.strip():
            raise ValueError("model.name_or_path is empty: give a hub id or a local checkpoint directory")
        if self.max_new_tokens < 1:
            raise ValueError("model.max_new_tokens must be at least 1")
        if self.backend == "geometric":
            if not self.detector.strip():
                raise ValueError("model.detector is empty: give a hub id or a local zero-shot object "
                                 "detection checkpoint directory")
            if self.depth_source != "topic" and not self.depth_model.strip():
                raise ValueError("model.depth_model is empty: give a hub id or a local depth "
                                 "estimation checkpoint directory, or set model.depth_source to topic")
        if not self.segmenter.strip():
            raise ValueError("model.segmenter is empty: give none, a hub id or a local SAM-family checkpoint "
                             "directory")
        if not 0.0 <= self.detector_threshold <= 1.0:
            raise ValueError(f"model.detector_threshold must be within [0, 1], got {self.detector_threshold}")
        if not 1.0 <= self.fallback_hfov_deg <= 179.0:
            raise ValueError(f"model.fallback_hfov_deg must be within [1, 179], got {self.fallback_hfov_deg}")
        if self.backend == "remote" and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"model.base_url {self.base_url!r} must be an http:// or https:// URL, "
                             "e.g. http://gpu-box:8000/v1")
        if self.timeout_s <= 0 or self.retries < 0 or self.max_in_flight < 1:
            raise ValueError("model.timeout_s must be > 0, model.retries >= 0, model.max_in_flight >= 1")
        self.extra_body_dict()  # a bad JSON object is refused now, not on the first frame

    def extra_body_dict(self) -> dict[str, Any]:
        """model.extra_body parsed (an empty dict when empty); ValueError when it is not a JSON object."""
        if not self.extra_body.strip():
            return {}
        try:
            value = json.loads(self.extra_body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model.extra_body is not valid JSON ({exc}): {self.extra_body!r}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"model.extra_body must be a JSON object ({{...}}), got {self.extra_body!r}")
        return value

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from node parameter values (the ``model.*`` keys)."""
        return cls(**{k[len("model."):]: v for k, v in values.items() if k.startswith("model.")})


def build_estimator(config: ModelConfig, require_server: bool = False) -> Estimator:
    """Load the configured backend. Raises ModelLoadError with what to do when it cannot.

    ``require_server``: the remote backend's server must answer now (a batch job); otherwise an
    unreachable server only warns and frames get no number until it answers (a robot's node).
    """
    if config.backend != "remote":  # the remote backend runs no model here and must not load torch
        from spatialvlm_ros.spatial.cpu_runtime import configure_cpu_runtime

        configure_cpu_runtime(config.cpu_threads)  # before torch loads: OpenMP reads its policy once
    if config.backend == "vlm":
        from spatialvlm_ros.spatial.vlm import VLMEstimator  # torch/transformers load here only

        return VLMEstimator(config)
    if config.backend == "geometric":
        from spatialvlm_ros.spatial.geometric import GeometricEstimator  # torch/transformers load here only

        return GeometricEstimator(config)
    if config.backend == "remote":
        from spatialvlm_ros.spatial.remote import RemoteEstimator  # the openai client loads here only

        return RemoteEstimator(config, require_server=require_server)
    raise ValueError(f"model.backend={config.backend!r} is not accepted; accepted: {', '.join(BACKENDS)}")


class SerializedEstimator:
    """One model copy shared by several nodes in a process: estimate() calls take turns.

    Generation on one model is not safe to run concurrently (and would only contend for the GPU). A
    backend that says it is ``concurrent`` (the remote one: the server batches) is called without the lock.
    """

    def __init__(self, inner: Estimator) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.model_name = inner.model_name
        self.concurrent = bool(getattr(inner, "concurrent", False))
        self.max_in_flight = int(getattr(inner, "max_in_flight", 1))
        self._lock = threading.Lock()
        self._users = 0

    @property
    def problem(self) -> str | None:
        return getattr(self.inner, "problem", None)

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        if self.concurrent:
            return self.inner.estimate(items, samples)
        with self._lock:
            return self.inner.estimate(items, samples)

    def close(self) -> None:
        """Frees the model when the last node that shares it closes."""
        with _SHARED_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            for key, value in list(_SHARED.items()):
                if value is self:
                    del _SHARED[key]
        self.inner.close()


_SHARED: dict[ModelConfig, SerializedEstimator] = {}
_SHARED_LOCK = threading.Lock()


def shared_estimator(config: ModelConfig) -> SerializedEstimator:
    """The process's estimator for ``config``, loaded on first use (one model copy per process)."""
    with _SHARED_LOCK:
        estimator = _SHARED.get(config)
        if estimator is None:
            estimator = SerializedEstimator(build_estimator(config))
            _SHARED[config] = estimator
        estimator._users += 1
        return estimator


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says what to do about it."""

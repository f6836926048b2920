"""``cross_check``: the other backend on the same frame, reported beside the one that decides.

A VLM's distances are noisy and a geometric measurement can pick the wrong box; running both on one
frame and publishing both numbers and their ratio lets a user see when they disagree, without changing
which one drives the reward or the affordance decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from spatialvlm_ros.params import BACKENDS
from spatialvlm_ros.spatial.estimator import ModelConfig

__all__ = ["cross_check_config", "cross_check_report", "other_backend"]


# A VLM (in process or behind a server) is checked by geometry; geometry by the in-process VLM.
_OTHER = {"vlm": "geometric", "remote": "geometric", "geometric": "vlm"}


def other_backend(backend: str) -> str:
    """vlm or remote -> geometric; geometric -> vlm."""
    if backend not in BACKENDS or backend not in _OTHER:
        raise ValueError(f"no other backend for {backend!r}; backends: {', '.join(BACKENDS)}")
    return _OTHER[backend]


def cross_check_config(config: ModelConfig) -> ModelConfig:
    """The same model group with the other backend: each backend reads only its own options."""
    return replace(config, backend=other_backend(config.backend))


def ratio(primary_m: float | None, other_m: float | None) -> float | None:
    """primary / other, None when either is unknown or the other is 0."""
    if primary_m is None or other_m is None or not math.isfinite(primary_m) or not math.isfinite(other_m):
        return None
    if other_m == 0:
        return None
    return round(primary_m / other_m, 4)


def cross_check_report(primary_m: float | None, other_m: float | None, backend: str, model: str, *,
                       key: str = "distance_m", raw_answers: Sequence[str] = (),
                       error: str | None = None) -> dict[str, Any]:
    """The ``cross_check`` object of reward_info / the affordance answer.

    ``ratio`` is the deciding backend's number over the other's (> 1: the deciding backend measures
    more); null when either number is unknown. ``error`` says why the other backend has no number.
    """
    if other_m is not None and not math.isfinite(other_m):
        other_m = None
    return {
        "backend": backend,
        "model": model,
        key: None if other_m is None else round(float(other_m), 4),
        "ratio": ratio(primary_m, other_m),
        "raw_answers": [str(a) for a in raw_answers],
        "error": None if other_m is not None else (error or "no number"),
    }

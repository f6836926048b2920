"""Batch jobs past one machine: frame batches spread over Ray actors, one model copy per actor.

``RayEstimator`` is one more Estimator: the Annotator (``estimate``) and the data engine's Synthesizer
(``measure_objects``) read the sources and write their files exactly as in a single process (so resume
and no-duplicate guarantees are the same), and each batch they hand over is split into one contiguous
chunk per actor, answered in parallel on the cluster, and put back in order. The actors need only the
frames (shipped through Ray's object store), not the episode files: workers need no shared file system.
Ray is imported here only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from spatialvlm_ros.spatial.estimator import Estimate, Frame, ModelConfig, ModelLoadError, SpatialQuery

__all__ = ["RayEstimator", "connect", "default_actors"]

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ModelLoadError('--ray needs Ray: pip install "ray[data]" (it is in requirements.txt)') from exc
    return ray


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at ``address`` ("local": start a private instance on this machine; "auto":
    the cluster this machine belongs to; "ray://head:10001" or "head:6379"). Returns its resources."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def default_actors(resources: dict[str, float], config: ModelConfig) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU for a model that runs on one, else one per CPU."""
    gpus = int(resources.get("GPU", 0))
    if gpus > 0 and config.backend != "remote" and config.device != "cpu":
        return gpus, 1.0
    return max(1, int(resources.get("CPU", 1))), 0.0


def _actor_class(ray: Any) -> Any:
    class EstimatorActor:
        """One model copy on a cluster node, answering chunks of frames."""

        def __init__(self, config: ModelConfig, batch_size: int) -> None:
            from spatialvlm_ros.spatial.estimator import build_estimator

            self.estimator = build_estimator(config, require_server=True)
            if hasattr(self.estimator, "max_batch_size"):
                self.estimator.max_batch_size = batch_size

        def where(self) -> str:
            import socket

            return socket.gethostname()

        def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int) -> list[Estimate]:
            return self.estimator.estimate(items, samples)

        def part_names(self) -> dict[str, str]:
            return dict(getattr(self.estimator, "part_names", {}))

        def measure_objects(self, pairs: Sequence[tuple[Frame, Sequence[str]]]) -> list[Any]:
            if not hasattr(self.estimator, "measure_objects"):
                raise TypeError(f"model.backend {self.estimator.backend!r} does not measure objects: the data "
                                "engine needs the geometric backend")
            return self.estimator.measure_objects([f for f, _ in pairs], [d for _, d in pairs])

        def close(self) -> None:
            self.estimator.close()

    return ray.remote(EstimatorActor)


class RayEstimator:
    """Estimates on ``actors`` Ray actors, each holding its own model copy (``gpus_per_actor`` GPUs)."""

    def __init__(self, config: ModelConfig, actors: int, batch_size: int, gpus_per_actor: float = 0.0,
                 cpus_per_actor: float = 1.0) -> None:
        ray = _ray()
        if not ray.is_initialized():
            raise ModelLoadError("RayEstimator needs a Ray connection first (fleet.connect)")
        if actors < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        self.backend = config.backend
        self.model_name = config.name_or_path
        self.batch_size = batch_size
        cls = _actor_class(ray).options(num_gpus=gpus_per_actor, num_cpus=cpus_per_actor)
        self._actors = [cls.remote(config, batch_size) for _ in range(actors)]
        self._part_names: dict[str, str] | None = None
        try:  # the first call on each actor waits for its model: a load error surfaces here
            hosts = ray.get([a.where.remote() for a in self._actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise ModelLoadError(f"a Ray actor could not load the model: {_cause(exc)}") from exc
        log.info("%d Ray actor(s) ready on %s", actors, ", ".join(sorted(set(hosts))))

    @property
    def actors(self) -> int:
        return len(self._actors)

    @property
    def part_names(self) -> dict[str, str]:
        """The model parts' names, as the actors loaded them."""
        if self._part_names is None:
            self._part_names = _ray().get(self._actors[0].part_names.remote())
        return self._part_names

    def _spread(self, method: str, items: list[Any], *args: Any) -> list[tuple[list[Any], Any]]:
        """``items`` in one contiguous chunk per actor, each chunk's answer list (or the RayError that
        failed it), in order."""
        ray = _ray()
        size = max(1, math.ceil(len(items) / len(self._actors)))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        refs = [getattr(actor, method).remote(chunk, *args)
                for actor, chunk in zip(self._actors, chunks, strict=False)]
        answers: list[tuple[list[Any], Any]] = []
        for chunk, ref in zip(chunks, refs, strict=True):
            try:
                answers.append((chunk, ray.get(ref)))
            except ray.exceptions.RayError as exc:
                answers.append((chunk, exc))
        return answers

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        results: list[Estimate] = []
        for chunk, answered in self._spread("estimate", list(items), samples):
            if isinstance(answered, BaseException):
                # A dead actor (its node lost, out of memory) fails its chunk only; the annotator's
                # next run retries frames whose reason starts with "model failed".
                reason = f"model failed: Ray actor failed: {_cause(answered)}"
                log.error("%s", reason)
                answered = [Estimate(q, None, reason=reason) for _, q in chunk]
            results.extend(answered)
        return results

    def measure_objects(self, frames: Sequence[Frame], descriptions: Sequence[Sequence[str]]) -> list[Any]:
        """GeometricEstimator.measure_objects on the actors. A failed chunk fails the whole batch
        (EpisodeFailure): the data engine then writes none of it, and the next run measures it again,
        where a frame marked unmeasured would never be retried."""
        from spatialvlm_ros.spatial.episode_frames import EpisodeFailure

        results: list[Any] = []
        for _chunk, answered in self._spread("measure_objects", list(zip(frames, descriptions, strict=True))):
            if isinstance(answered, BaseException):
                raise EpisodeFailure(f"model failed: Ray actor failed: {_cause(answered)} (this batch is not "
                                     "written; re-run the same command to continue)") from answered
            results.extend(answered)
        return results

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            try:
                ray.get(actor.close.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to free
                pass
            ray.kill(actor)
        self._actors = []


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # RayTaskError/RayActorError put a traceback first; its last line names the real error.
    return text[-1][:300] if text else type(exc).__name__

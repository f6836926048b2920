"""Offline annotation of recorded episodes: every frame of a bag through an estimator, into Parquet and a plot.

ROS-free (no rclpy): messages are decoded with rosbags' typestore, so the annotator runs on a GPU box
without a ROS install. ``spatialvlm_annotate`` (spatialvlm_ros/annotate.py) is the command line.

Decisions worth knowing:

* Frames, their numbering and the depth joined to them come from ``episode_frames.py`` (shared with the
  data engine); a depth or camera_info that was not used is named in the row's ``warning``.
* Resumable: finished rows are written as Parquet part files (atomically, every ``checkpoint_every``
  frames, every ``checkpoint_s`` seconds, and when a run stops on an error or Ctrl-C) under
  ``annotations.parts/``; a run skips frames already in a part or in ``annotations.parquet``. Rows
  whose model call failed (out of memory, ...) are retried by the next run.
* Rewards depend on the previous frame (``progress``), so they are never stored in parts: they are
  computed once at the end over the whole ordered sequence, from the stored distances, for every
  shaping mode. Frames without a distance get no reward and do not move the progress baseline, as in
  the live reward node.
* Rows made with other settings (model, question, samples, topics) are never mixed in: the run refuses
  and says to use ``force`` (recompute) or another output directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spatialvlm_ros.spatial.annotation_plot import plot_annotations
from spatialvlm_ros.spatial.episode_frames import (
    EpisodeFailure,
    FrameRecord,
    choose_topics,
    inspect_episode,
    iter_frames,
)
from spatialvlm_ros.spatial.episodes import (
    EPISODE_FILE,
    load_episode_info,
)
from spatialvlm_ros.spatial.estimator import RUNTIME_MODEL_PARAMS, Estimate, Estimator
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE, distance_query
from spatialvlm_ros.spatial.reward import REWARD_MODES, RewardConfig, RewardShaper
from spatialvlm_ros.spatial.stamp_sync import SyncPolicy

__all__ = [
    "ANNOTATIONS_FILE",
    "BASE_SCHEMA",
    "METADATA_KEY",
    "PARTS_DIR",
    "PLOT_FILE",
    "AnnotateSettings",
    "Annotator",
    "EpisodeResult",
    "compute_rewards",
    "read_annotations",
    "reward_column",
]

ANNOTATIONS_FILE = "annotations.parquet"
PLOT_FILE = "reward.png"
PARTS_DIR = "annotations.parts"
LOCK_FILE = ".annotate.lock"
METADATA_KEY = b"spatialvlm_ros.annotation"
FORMAT = "spatialvlm_ros.annotations/1"
RETRY_PREFIX = "model failed"  # Estimate.reason of a batch the model could not run: retried next time

# Columns written per frame before rewards are known (the part files hold exactly these).
BASE_SCHEMA = pa.schema([
    pa.field("stamp_ns", pa.int64(), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),
    pa.field("bag_time_ns", pa.int64(), nullable=False),
    pa.field("question", pa.string()),
    pa.field("raw_answers", pa.list_(pa.string())),
    pa.field("sample_distances_m", pa.list_(pa.float64())),
    pa.field("distance_m", pa.float64()),
    pa.field("error", pa.string()),
    pa.field("details", pa.string()),
    pa.field("warning", pa.string()),  # why depth / camera_info were not used (stamp_sync)
])

_log = logging.getLogger(__name__)


def reward_column(mode: str) -> str:
    return f"reward_{mode}"


# ---------------------------------------------------------------------------------------------
# Rewards, over a whole ordered episode


def compute_rewards(
    distances: Sequence[float | None], shaping: RewardConfig, modes: Sequence[str] = REWARD_MODES,
) -> dict[str, list[float | None]]:
    """Reward per frame under each mode, from the distances in frame order (None: no reward).

    ``shaping``'s scale, success distance, bonus and smoothing apply to every mode; its own mode is
    ignored. A frame without a distance gets None and leaves the shaper as it was, so ``progress``
    compares with the previous frame that had one (what the live reward node does).
    """
    out: dict[str, list[float | None]] = {}
    for mode in modes:
        shaper = RewardShaper(dataclasses.replace(shaping, mode=mode))
        rewards: list[float | None] = []
        for d in distances:
            if d is None or not math.isfinite(d) or d < 0:
                rewards.append(None)
            else:
                rewards.append(float(shaper.step(float(d)).reward))
        out[mode] = rewards
    return out


# ---------------------------------------------------------------------------------------------
# Settings and results


@dataclass(frozen=True)
class AnnotateSettings:
    """What to ask and how; per-episode values (target, topics) may come from the episode itself."""

    model: dict[str, Any]  # the model.* values (name -> value), recorded with the rows
    target_object: str | None = None  # None: episode.yaml's target_object
    gripper: str = "the robot gripper"
    question_template: str = DEFAULT_DISTANCE_TEMPLATE
    image_topic: str | None = None  # None: the recorded image topic
    depth_topic: str | None = None  # None: the recorded depth topic if any; "": none
    camera_info_topic: str | None = None  # None: the recorded camera_info if any; "": none
    samples: int = 1
    every: int = 1
    batch_size: int = 8
    shaping: RewardConfig = field(default_factory=RewardConfig)
    reward_modes: tuple[str, ...] = REWARD_MODES
    output_dir: Path | None = None  # None: inside each episode directory
    force: bool = False
    checkpoint_every: int = 256  # frames
    checkpoint_s: float = 60.0
    progress: bool = True
    sync: SyncPolicy = field(default_factory=SyncPolicy)  # the nodes' sync.* parameters

    def __post_init__(self) -> None:
        for name in ("samples", "every", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        unknown = [m for m in self.reward_modes if m not in REWARD_MODES]
        if unknown or not self.reward_modes:
            raise ValueError(f"reward modes {unknown or '(none)'} not accepted; accepted: "
                             f"{', '.join(REWARD_MODES)}")


@dataclass
class EpisodeResult:
    episode: Path
    output_dir: Path
    frames: int = 0  # image messages in the bag
    annotated: int = 0  # rows in annotations.parquet
    new: int = 0  # rows computed by this run
    with_distance: int = 0
    median_distance_m: float | None = None
    seconds: float = 0.0
    up_to_date: bool = False
    image_topic: str = ""
    error: str | None = None

    def summary(self) -> str:
        name = self.episode.name
        if self.error is not None:
            return f"{name}: FAILED: {self.error}"
        median = "-" if self.median_distance_m is None else f"{self.median_distance_m:.3f} m"
        state = " (up to date)" if self.up_to_date else ""
        return (f"{name}: {self.frames} frames, {self.annotated} annotated ({self.new} new), "
                f"{self.with_distance} with distance, median distance {median}, "
                f"{self.seconds:.1f} s{state} -> {self.output_dir / ANNOTATIONS_FILE}")


# ---------------------------------------------------------------------------------------------
# Stored rows


def _read_meta(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_annotations(path: Path | str) -> tuple[pa.Table, dict[str, Any]]:
    """An annotations.parquet (a file, or the directory holding it) and its spatialvlm_ros metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATIONS_FILE
    table = pq.read_table(path)
    return table, _read_meta(table.schema)


def _fingerprint_diff(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    diffs = []
    for key in keys:
        a, b = stored.get(key), current.get(key)
        if a == b or key not in stored:  # a setting added since (at its default): not a change
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{d}" for d in _fingerprint_diff(a, b)]
        else:
            diffs.append(f"{key}: {a!r} then, {b!r} now")
    return diffs


class _Lock:
    """An exclusive lock on an output directory: two annotators on one episode would mix rows."""

    def __init__(self, directory: Path) -> None:
        self._fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise EpisodeFailure(f"another spatialvlm_annotate is writing {directory}") from None

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------
# The annotator


class Annotator:
    """Annotates episodes with one estimator, built on first need (a run with nothing to do loads none).

    ``on_part(path, rows)`` is called after each part file is written (tests interrupt runs there).
    """

    def __init__(
        self, settings: AnnotateSettings, estimator_factory: Callable[[], Estimator],
        on_part: Callable[[Path, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._factory = estimator_factory
        self._estimator: Estimator | None = None
        self.on_part = on_part
        self.load_seconds = 0.0  # time spent building the estimator (not counted in episode times)

    @property
    def estimator(self) -> Estimator:
        if self._estimator is None:
            started = time.monotonic()
            self._estimator = self._factory()
            self.load_seconds = time.monotonic() - started
            _log.info("model loaded in %.1f s", self.load_seconds)
            if hasattr(self._estimator, "max_batch_size"):
                self._estimator.max_batch_size = self.settings.batch_size  # type: ignore[attr-defined]
        return self._estimator

    @property
    def model_loaded(self) -> bool:
        return self._estimator is not None

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
            self._estimator = None

    def output_dir(self, episode: Path) -> Path:
        out = self.settings.output_dir
        return Path(episode) if out is None else Path(out) / Path(episode).name

    # -- one episode ---------------------------------------------------------------------------

    def annotate(self, episode: Path) -> EpisodeResult:
        """Annotate one episode; raises EpisodeFailure (this episode only) or ModelLoadError (all)."""
        started = time.monotonic()
        loaded_before = self.model_loaded
        episode = Path(episode)
        s = self.settings
        info = self._episode_info(episode)
        if info.get("finalized") is False and not info.get("recovered"):
            info = self._recover(episode, info)
        target = s.target_object if s.target_object else (info.get("target_object") or "")
        if not str(target).strip():
            where = (f"{EPISODE_FILE} has no target_object" if info
                     else f"the episode has no {EPISODE_FILE}")
            raise EpisodeFailure(f"no target object: {where} and no --target was given; pass e.g. "
                                 "--target 'the orange tea bottle'")
        try:
            query = distance_query(s.question_template, s.gripper, str(target))
        except ValueError as exc:
            raise EpisodeFailure(str(exc)) from exc
        try:
            topics = inspect_episode(episode)
        except Exception as exc:  # noqa: BLE001 - rosbags raises several kinds for broken bags
            raise EpisodeFailure(self._bag_error(exc, info)) from exc
        image, depth, camera_info = choose_topics(topics, s.image_topic, s.depth_topic,
                                                  s.camera_info_topic)
        out = self.output_dir(episode)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EpisodeFailure(f"cannot create the output directory {out}: {exc}") from exc
        result = EpisodeResult(episode, out, frames=topics.counts.get(image, 0), image_topic=image)
        fingerprint = {
            "question": query.text,
            "samples": s.samples,
            "topics": {"image": image, "depth": depth, "camera_info": camera_info},
            "sync": dataclasses.asdict(s.sync),
            "model": {k: v for k, v in sorted(s.model.items()) if k not in RUNTIME_MODEL_PARAMS},
        }
        meta = {
            "format": FORMAT,
            "episode": episode.name,
            "episode_dir": str(episode.resolve()),
            "target_object": query.object_b,
            "gripper": query.object_a,
            "question_template": s.question_template,
            "fingerprint": fingerprint,
            "model": dict(sorted(s.model.items())),
            "software": {"package": "spatialvlm_ros", "version": _version()},
        }
        lock = _Lock(out)
        try:
            self._annotate_locked(episode, out, result, query, image, depth, camera_info, meta, info)
        finally:
            lock.release()
        result.seconds = time.monotonic() - started
        if self.model_loaded and not loaded_before:
            result.seconds -= self.load_seconds
        return result

    def _annotate_locked(
        self, episode: Path, out: Path, result: EpisodeResult, query: Any, image: str,
        depth: str | None, camera_info: str | None, meta: dict[str, Any], info: dict[str, Any],
    ) -> None:
        s = self.settings
        parts_dir = out / PARTS_DIR
        final_path = out / ANNOTATIONS_FILE
        if s.force:
            for path in (final_path, out / PLOT_FILE):
                path.unlink(missing_ok=True)
            for path in parts_dir.glob("*") if parts_dir.is_dir() else ():
                path.unlink()

        final, parts = self._stored_tables(final_path, parts_dir, meta["fingerprint"])
        done: dict[int, bool] = {}  # frame_index -> final (not to be retried)
        for table in ([final] if final is not None else []) + parts:
            errors = table.column("error").to_pylist()
            for i, err in zip(table.column("frame_index").to_pylist(), errors, strict=True):
                done[i] = not (err or "").startswith(RETRY_PREFIX)

        def wanted(i: int) -> bool:
            return i % s.every == 0 and not done.get(i, False)

        todo = sum(1 for i in range(0, result.frames, s.every) if not done.get(i, False))
        new_parts = 0
        if todo:
            new_parts = self._run_frames(episode, parts_dir, result, query, image, depth,
                                         camera_info, meta, wanted, todo, info)
        up_to_date = (final is not None and not todo and not new_parts and not parts
                      and (out / PLOT_FILE).exists()
                      and self._reward_meta() == _read_meta(pq.read_schema(final_path)).get("reward"))
        if up_to_date:
            table = final
            result.up_to_date = True
        else:
            table = self._finalize(final_path, parts_dir, meta, out / PLOT_FILE)
        distances = [d for d in table.column("distance_m").to_pylist() if d is not None]
        result.annotated = table.num_rows
        result.with_distance = len(distances)
        result.median_distance_m = float(statistics.median(distances)) if distances else None

    def _episode_info(self, episode: Path) -> dict[str, Any]:
        try:
            return load_episode_info(episode) or {}
        except FileNotFoundError:
            return {}
        except Exception as exc:  # noqa: BLE001 - a broken episode.yaml is reported, the bag may still do
            _log.warning("%s: %s unreadable (%s); using the command line only", episode.name,
                         EPISODE_FILE, exc)
            return {}

    def _recover(self, episode: Path, info: dict[str, Any]) -> dict[str, Any]:
        """An episode a killed recorder left behind: rebuilt first (recovery.py), then annotated."""
        from spatialvlm_ros.spatial.recovery import needs_recovery, recover_episode

        if not needs_recovery(episode):
            return info
        result = recover_episode(episode)
        if result.status == "in use":
            raise EpisodeFailure("the episode is still being recorded (finalized: false and its "
                                 "recording lock is held); annotate it after the recorder stops it")
        if result.status != "recovered":
            raise EpisodeFailure(f"the recorder never finalized this episode and it could not be "
                                 f"recovered: {result.error}")
        _log.warning("%s: the recorder never finalized it; %s", episode.name, result.summary())
        return self._episode_info(episode)

    @staticmethod
    def _bag_error(exc: BaseException, info: dict[str, Any]) -> str:
        text = f"cannot read the bag: {type(exc).__name__}: {exc}"
        if info.get("finalized") is False:
            text += (f" ({EPISODE_FILE} says finalized: false: the recorder stopped before it closed "
                     "the bag; `spatialvlm_recover` rebuilds what is on disk)")
        return text

    def _stored_tables(
        self, final_path: Path, parts_dir: Path, fingerprint: dict
    ) -> tuple[pa.Table | None, list[pa.Table]]:
        """Rows already written: the final file's and the parts' (in write order), checked to match."""
        tables: list[tuple[Path, pa.Table]] = []
        if final_path.exists():
            try:
                tables.append((final_path, pq.read_table(final_path)))
            except Exception as exc:  # noqa: BLE001
                raise EpisodeFailure(f"{final_path} is unreadable ({exc}); use --force to "
                                     "recompute it") from exc
        if parts_dir.is_dir():
            for path in sorted(parts_dir.glob("*.tmp")) + sorted(parts_dir.glob(".*.tmp")):
                path.unlink(missing_ok=True)  # a part whose write was cut off: its frames are redone
            for path in sorted(parts_dir.glob("part-*.parquet")):
                try:
                    tables.append((path, pq.read_table(path)))
                except Exception as exc:  # noqa: BLE001 - written atomically, so only by outside harm
                    _log.warning("%s is unreadable (%s); its frames are annotated again", path, exc)
                    path.unlink(missing_ok=True)
        for path, table in tables:
            stored = _read_meta(table.schema).get("fingerprint", {})
            diffs = _fingerprint_diff(stored, fingerprint)
            if diffs:
                raise EpisodeFailure(
                    f"{path.relative_to(final_path.parent)} was made with other settings "
                    f"({'; '.join(diffs)}); use --force to recompute, or --output for a separate "
                    "copy")
        base = [_with_base_columns(t).select(BASE_SCHEMA.names).cast(BASE_SCHEMA) for _, t in tables]
        if tables and tables[0][0] == final_path:
            return base[0], base[1:]
        return None, base

    def _run_frames(
        self, episode: Path, parts_dir: Path, result: EpisodeResult, query: Any, image: str,
        depth: str | None, camera_info: str | None, meta: dict[str, Any],
        wanted: Callable[[int], bool], todo: int, info: dict[str, Any],
    ) -> int:
        s = self.settings
        estimator = self.estimator  # loads the model (ModelLoadError stops the whole run)
        parts_dir.mkdir(exist_ok=True)
        schema = BASE_SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta).encode()})
        rows: list[dict[str, Any]] = []
        batch: list[FrameRecord] = []
        parts = 0
        last_flush = time.monotonic()
        depth_notes: dict[str, int] = {}
        bad_frames = 0

        def flush() -> None:
            nonlocal parts, last_flush, rows
            last_flush = time.monotonic()
            if not rows:
                return
            path = parts_dir / f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
            _write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), path)
            n, rows = len(rows), []
            parts += 1
            if self.on_part is not None:
                self.on_part(path, n)

        def run_batch() -> None:
            if not batch:
                return
            estimates = estimator.estimate([(r.frame, query) for r in batch], s.samples)
            if len(estimates) != len(batch):
                raise RuntimeError(f"the estimator answered {len(estimates)} of {len(batch)} frames")
            rows.extend(_row(r, query.text, e) for r, e in zip(batch, estimates, strict=True))
            result.new += len(batch)
            bar.update(len(batch))
            batch.clear()
            if len(rows) >= s.checkpoint_every or time.monotonic() - last_flush >= s.checkpoint_s:
                flush()

        from tqdm import tqdm

        bar = tqdm(total=todo, desc=episode.name, unit="frame", disable=not s.progress,
                   dynamic_ncols=True, leave=False)
        frames = iter_frames(episode, image, depth, camera_info, wanted, sync=s.sync)
        try:
            while True:
                try:
                    record = next(frames)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - a bag that breaks mid-way
                    raise EpisodeFailure(self._bag_error(exc, info) + " (frames annotated before this "
                                         "point are kept; re-run to continue)") from exc
                if record.depth_note:
                    depth_notes[record.depth_note] = depth_notes.get(record.depth_note, 0) + 1
                if record.frame is None:
                    bad_frames += 1
                    rows.append(_row(record, query.text, None))
                    result.new += 1
                    bar.update(1)
                    continue
                batch.append(record)
                if len(batch) >= s.batch_size:
                    run_batch()
            run_batch()
        finally:
            frames.close()  # closes the bag also when stopped early
            bar.close()
            # Whatever was answered is kept, also on Ctrl-C or an error: a re-run continues after it.
            batch.clear()
            flush()
        for note, n in depth_notes.items():
            _log.warning("%s: %d frame(s): %s", episode.name, n, note)
        if bad_frames:
            _log.warning("%s: %d frame(s) could not be decoded (their rows say why in the error column)",
                         episode.name, bad_frames)
        return parts

    def _reward_meta(self) -> dict[str, Any]:
        s = self.settings
        shaping = dataclasses.asdict(s.shaping)
        shaping.pop("mode")
        return {"modes": list(s.reward_modes), **shaping}

    def _finalize(self, final_path: Path, parts_dir: Path, meta: dict[str, Any], plot_path: Path) -> pa.Table:
        """Merge the final file and the parts (newest row per frame wins), add rewards, plot."""
        final, parts = self._stored_tables(final_path, parts_dir, meta["fingerprint"])
        stored = ([final] if final is not None else []) + parts
        merged = pa.concat_tables(stored) if stored else BASE_SCHEMA.empty_table()
        # Last occurrence of each frame wins (a retried frame replaces its failed row).
        indices = merged.column("frame_index").to_numpy()
        order = np.arange(len(indices))
        last: dict[int, int] = {}
        for pos, idx in zip(order.tolist(), indices.tolist(), strict=True):
            last[idx] = pos
        keep = sorted(last.values(), key=lambda pos: indices[pos])
        table = merged.take(pa.array(keep, pa.int64()))
        rewards = compute_rewards(table.column("distance_m").to_pylist(), self.settings.shaping,
                                  self.settings.reward_modes)
        columns = BASE_SCHEMA.names[:BASE_SCHEMA.get_field_index("details")]
        fields = [BASE_SCHEMA.field(n) for n in columns]
        arrays = [table.column(n) for n in columns]
        for mode in self.settings.reward_modes:
            fields.append(pa.field(reward_column(mode), pa.float64()))
            arrays.append(pa.array(rewards[mode], pa.float64()))
        fields.append(BASE_SCHEMA.field("details"))
        arrays.append(table.column("details"))
        full_meta = {**meta, "reward": self._reward_meta(),
                     "written_at": datetime.now(timezone.utc).isoformat()}
        schema = pa.schema(fields, metadata={
            METADATA_KEY: json.dumps(full_meta).encode(),
            b"model.backend": str(meta["model"].get("model.backend", "")).encode(),
            b"model.name_or_path": str(meta["model"].get("model.name_or_path", "")).encode(),
        })
        table = pa.Table.from_arrays(arrays, schema=schema)
        _write_parquet_atomic(table, final_path)
        plot_annotations(table, plot_path, title=f"{meta['episode']}: distance from "
                         f"{meta['gripper']} to {meta['target_object']}",
                         subtitle=f"model: {meta['model'].get('model.name_or_path', '')} "
                                  f"({meta['model'].get('model.backend', '')} backend)")
        if parts_dir.is_dir():
            for path in parts_dir.glob("*"):
                path.unlink(missing_ok=True)
            try:
                parts_dir.rmdir()
            except OSError:
                pass
        return table


def _row(record: FrameRecord, question: str, estimate: Estimate | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "stamp_ns": record.stamp_ns,
        "frame_index": record.frame_index,
        "bag_time_ns": record.bag_time_ns,
        "question": question,
        "raw_answers": [],
        "sample_distances_m": [],
        "distance_m": None,
        "error": record.error,
        "details": None,
        "warning": record.depth_note,
    }
    if estimate is not None:
        value = estimate.value_m
        row["raw_answers"] = list(estimate.raw_answers)
        row["sample_distances_m"] = [None if v is None else float(v) for v in estimate.sample_values_m]
        row["distance_m"] = None if value is None or not math.isfinite(value) else float(value)
        row["error"] = estimate.reason if row["distance_m"] is None else None
        if row["distance_m"] is None and not row["error"]:
            row["error"] = "no distance"
        if estimate.details is not None:
            row["details"] = json.dumps(estimate.details, default=_json_default)
    return row


def _with_base_columns(table: pa.Table) -> pa.Table:
    """Rows written before a column existed (``warning``) get it, empty."""
    for f in BASE_SCHEMA:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _version() -> str:
    from spatialvlm_ros import __version__

    return __version__

"""The data engine: frames of a source -> selection -> objects (the geometric backend's detector, depth,
lifting and floor frame) -> unambiguous names -> templated questions -> dataset rows, in batches,
resumable. ``spatialvlm_synthesize`` is its command line.

Decisions worth knowing:

* Every question of a frame is drawn from a random stream seeded by (seed, source name, frame index):
  a re-run, a resumed run and a run with another batch size write the same rows.
* Frame selection runs over every frame (also ones done before) so that "near-duplicate of the last
  kept frame" means the same thing in a resumed run; only new frames are measured and counted.
* The vocabulary is the user's object list plus the episode's target_object; descriptions are
  detected as given and named in questions as "the <description>".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.spatial.episode_frames import EpisodeFailure, FrameRecord
from spatialvlm_ros.spatial.estimator import RUNTIME_MODEL_PARAMS
from spatialvlm_ros.spatial.geometric import FrameObjects
from spatialvlm_ros.spatial.vqa.dataset import CARD_FILE, DatasetDir, SettingsMismatch, source_key
from spatialvlm_ros.spatial.vqa.naming import NamedObject, name_objects, plain_name
from spatialvlm_ros.spatial.vqa.selection import REJECT_REASONS, FrameSelector, SelectionSettings
from spatialvlm_ros.spatial.vqa.sources import Source, open_source
from spatialvlm_ros.spatial.vqa.templates import VQA, TemplateSettings, candidate_questions, sample_questions

__all__ = ["SourceResult", "SynthesizeSettings", "Synthesizer", "row_for"]

_log = logging.getLogger(__name__)
IMAGE_FORMATS = ("png", "jpeg")


@dataclass(frozen=True)
class SynthesizeSettings:
    objects: tuple[str, ...] = ()  # the vocabulary (plus each episode's target_object)
    use_target_object: bool = True
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    image_topic: str | None = None
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    every: int = 1
    batch_size: int = 8
    seed: int = 0
    image_format: str = "png"
    model: dict[str, Any] = field(default_factory=dict)  # the model.* values, recorded with the rows
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.every < 1 or self.batch_size < 1:
            raise ValueError("every and batch_size must be at least 1")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format {self.image_format!r} not accepted; accepted: {', '.join(IMAGE_FORMATS)}")

    def fingerprint(self) -> dict[str, Any]:
        """What changes the rows (not batch size, progress, force, or where the model runs)."""
        d = dataclasses.asdict(self)
        for key in ("batch_size", "progress", "force"):
            d.pop(key)
        d["model"] = {k: v for k, v in d["model"].items() if k not in RUNTIME_MODEL_PARAMS}
        d["objects"] = list(d["objects"])
        d["templates"]["kinds"] = list(d["templates"]["kinds"])
        return json.loads(json.dumps(d, sort_keys=True, default=str))

    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.fingerprint(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class SourceResult:
    source: Path
    counts: Counter = field(default_factory=Counter)
    new_rows: int = 0
    seconds: float = 0.0
    up_to_date: bool = False

    def summary(self) -> str:
        c = self.counts
        skipped = ", ".join(f"{c[r]} {r}" for r in (*REJECT_REASONS, "undecodable") if c[r]) or "none"
        state = " (up to date)" if self.up_to_date else ""
        return (f"{self.source.name}: {c['frames']} frames, {c['kept']} kept (skipped: {skipped}), "
                f"{c['measured']} measured, {c['questions']} questions ({self.new_rows} new), "
                f"{c['ambiguous']} ambiguous descriptions left out, {c['disambiguated']} objects named by "
                f"position, {self.seconds:.1f} s{state}")


def _encode(rgb: np.ndarray, image_format: str) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = (cv2.imencode(".png", bgr) if image_format == "png"
               else cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]))
    if not ok:
        raise ValueError("image encoding failed")
    return buf.tobytes()


def _object_row(o: NamedObject) -> dict[str, Any]:
    g = o.geometry
    return {"name": o.name, "description": o.description, "disambiguated_by": o.disambiguated_by,
            "box": [float(v) for v in o.measured.detection.box], "score": float(o.measured.detection.score),
            "centre_m": [float(v) for v in g.centre_camera], "centre_floor_m": [float(v) for v in g.centre_frame],
            "width_m": g.width_m, "length_m": g.length_m, "height_m": g.height_m}


def row_for(q: VQA, index: int, image: dict[str, Any], source: Source, record: FrameRecord,
            measured: FrameObjects, detector: str, depth_model: str, settings_hash: str) -> dict[str, Any]:
    """One dataset row (the columns of ``dataset.features``)."""
    d = measured.details
    return {
        "id": f"{source.name}/{record.frame_index}/{index}",
        "image": image,
        "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                  {"type": "text", "text": q.question}]},
                     {"role": "assistant", "content": [{"type": "text", "text": q.answer}]}],
        "question": q.question, "answer": q.answer, "kind": q.kind, "category": q.category,
        "answer_type": q.answer_type, "value": q.value, "value_text": q.value_text,
        "objects": [_object_row(o) for o in q.objects],
        "source": source.name, "source_kind": source.kind, "source_path": str(source.path),
        "frame_index": record.frame_index, "stamp_ns": record.stamp_ns, "task": source.task or None,
        "target_object": source.target_object or None, "depth_source": d.get("depth_source"),
        "intrinsics_source": d.get("intrinsics"), "measurement_frame": d.get("frame"),
        "detector": detector, "depth_model": depth_model, "settings_hash": settings_hash,
    }


class Synthesizer:
    """Writes the questions of sources into one dataset directory, with one estimator (built on first
    need). ``estimator_factory`` returns a GeometricEstimator, or a fleet.RayEstimator that spreads it over
    Ray actors (anything with ``measure_objects`` and ``part_names``)."""

    def __init__(self, output: Path | str, settings: SynthesizeSettings,
                 estimator_factory: Callable[[], Any],
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.dataset = DatasetDir(output)
        self.settings = settings
        self._factory = estimator_factory
        self._estimator: Any = None
        self.on_batch = on_batch  # called after each written batch (tests interrupt runs there)

    @property
    def estimator(self) -> Any:
        if self._estimator is None:
            self._estimator = self._factory()
        return self._estimator

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
            self._estimator = None

    def vocabulary(self, source: Source) -> list[str]:
        words = list(self.settings.objects)
        if self.settings.use_target_object and source.target_object:
            words.append(source.target_object)
        seen: dict[str, str] = {}
        for w in words:
            if w.strip():
                seen.setdefault(plain_name(w).lower(), " ".join(w.split()))
        return list(seen.values())

    # ------------------------------------------------------------------------------ one source
    def run(self, path: Path) -> SourceResult:
        """Synthesize one source; raises EpisodeFailure (this source only) or the model's load error."""
        s = self.settings
        started = time.monotonic()
        source = open_source(Path(path), s.image_topic, s.depth_topic, s.camera_info_topic)
        vocabulary = self.vocabulary(source)
        if not vocabulary:
            raise EpisodeFailure("no objects to look for: give --objects, or record the episode with a "
                                 "target_object")
        key = source_key(source.name, source.path)
        fingerprint = {**s.fingerprint(), "vocabulary": vocabulary}
        if s.force:
            self.dataset.forget(key)
        try:
            done, counts, batch_no = self.dataset.progress(key, fingerprint)
        except SettingsMismatch as exc:
            raise EpisodeFailure(str(exc)) from exc
        result = SourceResult(source.path, counts)
        todo = sum(1 for i in range(0, source.n_frames, s.every) if i not in done)
        if not todo:
            result.up_to_date = True
            result.seconds = time.monotonic() - started
            return result
        from tqdm import tqdm

        selector = FrameSelector(s.selection)
        seen: list[int] = []
        batch: list[FrameRecord] = []
        rows: list[dict[str, Any]] = []
        new_counts: Counter = Counter()
        bar = tqdm(total=todo, desc=source.name, unit="frame", disable=not s.progress, leave=False,
                   dynamic_ncols=True)

        def flush(final: bool = False) -> None:
            nonlocal batch_no, rows, seen, new_counts
            if batch:
                rows.extend(self._questions(batch, source, vocabulary, new_counts))
                batch.clear()
            if seen and (rows or final or len(seen) >= 256):
                self.dataset.write_batch(key, batch_no, rows, seen, new_counts, fingerprint)
                result.new_rows += len(rows)
                counts.update(new_counts)
                batch_no += 1
                rows, seen, new_counts = [], [], Counter()
                if self.on_batch is not None:
                    self.on_batch(batch_no)

        frames = source.frames(lambda i: i % s.every == 0)
        try:
            while True:
                try:
                    record = next(frames)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - a bag that breaks mid-way
                    raise EpisodeFailure(f"cannot read the bag: {type(exc).__name__}: {exc} (frames done "
                                         "before this point are kept; re-run to continue)") from exc
                new = record.frame_index not in done
                if record.frame is None:
                    if new:
                        new_counts.update(["frames", "undecodable"])
                        seen.append(record.frame_index)
                        bar.update(1)
                    continue
                reason = selector.check(record.frame.rgb)
                if not new:
                    continue
                seen.append(record.frame_index)
                new_counts["frames"] += 1
                bar.update(1)
                if reason is not None:
                    new_counts[reason] += 1
                    continue
                new_counts["kept"] += 1
                batch.append(record)
                if len(batch) >= s.batch_size:
                    flush()
            flush(final=True)
        finally:
            frames.close()
            bar.close()
        result.seconds = time.monotonic() - started
        return result

    def _questions(self, batch: list[FrameRecord], source: Source, vocabulary: list[str],
                   counts: Counter) -> list[dict[str, Any]]:
        s = self.settings
        estimator = self.estimator
        measured = estimator.measure_objects([r.frame for r in batch], [vocabulary] * len(batch))
        names = getattr(estimator, "part_names", {})
        detector, depth_model = names.get("detector", ""), names.get("depth_model", "")
        rows: list[dict[str, Any]] = []
        settings_hash = s.settings_hash()
        for record, m in zip(batch, measured, strict=True):
            if m.problem is not None or m.frame3d is None:
                counts["not_measured"] += 1
                _log.debug("%s frame %d not measured: %s", source.name, record.frame_index, m.problem)
                continue
            counts["measured"] += 1
            named, skipped = name_objects(m.objects)
            counts["ambiguous"] += sum(1 for why in skipped.values() if "told apart" in why)
            counts["disambiguated"] += sum(1 for o in named if o.disambiguated_by)
            counts["objects"] += len(named)
            rng = np.random.default_rng([s.seed, zlib.crc32(source.name.encode()), record.frame_index])
            questions = sample_questions(candidate_questions(named, m.frame3d, s.templates, rng), s.templates, rng)
            if not questions:
                counts["no_question"] += 1
                continue
            assert record.frame is not None
            image = {"bytes": _encode(record.frame.rgb, s.image_format), "path": None}
            for i, q in enumerate(questions):
                rows.append(row_for(q, i, image, source, record, m, detector, depth_model, settings_hash))
            counts["questions"] += len(questions)
        return rows

    # ------------------------------------------------------------------------------ the card
    def write_card(self, command: str = "") -> Path:
        from spatialvlm_ros.spatial.vqa.card import render_card

        path = self.dataset.root / CARD_FILE
        path.write_text(render_card(self.dataset, self.settings, command))
        return path

"""Training on datasets written by ``spatialvlm_synthesize``: loading, the held-out split by episode, and
batches that are a pure function of (seed, step), mixed with the renderer's own scenes.

The split is by source (episode or image folder), never by frame: frames of one episode are near-copies
of each other, and a frame-level split would measure memory, not generalisation. Which sources are held
out is decided by a hash of their names, so it does not depend on the order directories are given in or
on how many rows each holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.spatial.synth.qa import QA
from spatialvlm_ros.spatial.vqa.dataset import read_table

__all__ = ["VQARow", "VQASet", "load_vqa", "split_by_source"]

COLUMNS = ["id", "image", "question", "answer", "kind", "category", "answer_type", "value", "value_text",
           "objects", "source", "frame_index"]


@dataclass
class VQARow:
    id: str
    image_png: bytes
    question: str
    answer: str
    kind: str
    category: str
    answer_type: str
    value: float | None
    value_text: str | None
    object_names: tuple[str, ...]
    source: str
    frame_index: int
    dataset: str

    def qa(self) -> QA:
        """As the trainer's collator expects (the renderer's QA record)."""
        return QA(self.kind, self.question, self.answer,
                  self.value if self.value is not None else (self.value_text or ""), self.object_names)


@dataclass
class VQASet:
    rows: list[VQARow]

    def sources(self) -> list[str]:
        return sorted({r.source for r in self.rows})


def load_vqa(dirs: Sequence[Path | str]) -> VQASet:
    """Every row of the dataset directories (pyarrow; images stay encoded until used)."""
    rows: list[VQARow] = []
    for d in dirs:
        table = read_table(d, columns=COLUMNS).to_pylist()
        for r in table:
            rows.append(VQARow(r["id"], r["image"]["bytes"], r["question"], r["answer"], r["kind"], r["category"],
                               r["answer_type"], r["value"], r["value_text"],
                               tuple(o["name"] for o in r["objects"]), r["source"], int(r["frame_index"]),
                               str(d)))
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, dirs))}")
    return VQASet(rows)


def split_by_source(data: VQASet, heldout_share: float, heldout: Sequence[str] = ()) -> tuple[list[VQARow], list[VQARow], list[str]]:
    """(train rows, held-out rows, held-out source names). ``heldout`` names sources explicitly;
    otherwise the ``heldout_share`` of sources (at least one when there are two or more) with the
    smallest name hashes."""
    sources = data.sources()
    if heldout:
        unknown = sorted(set(heldout) - set(sources))
        if unknown:
            raise ValueError(f"held-out sources not in the data: {', '.join(unknown)}")
        chosen = set(heldout)
    elif heldout_share <= 0 or len(sources) < 2:
        chosen = set()
    else:
        n = min(len(sources) - 1, max(1, round(heldout_share * len(sources))))
        ranked = sorted(sources, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        chosen = set(ranked[:n])
    train = [r for r in data.rows if r.source not in chosen]
    held = [r for r in data.rows if r.source in chosen]
    return train, held, sorted(chosen)


def decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a row's image cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VQABatches:
    """Batches of training rows for ``step``: a pure function of (seed, step). A ``synthetic_share`` of
    each batch comes from the renderer's scenes (``training.data``), the rest from the rows."""

    def __init__(self, rows: Sequence[VQARow], seed: int, synthetic_share: float = 0.0,
                 render_size: tuple[int, int] = (224, 168), mix: dict[str, float] | None = None) -> None:
        if not rows:
            raise ValueError("no training rows (every source is held out?)")
        self.rows = list(rows)
        self.seed = seed
        self.synthetic_share = synthetic_share
        self.render_size = render_size
        self.mix = mix
        self._images: dict[tuple[str, str, int], np.ndarray] = {}

    def image(self, row: VQARow) -> np.ndarray:
        key = (row.dataset, row.source, row.frame_index)
        if key not in self._images:
            self._images[key] = decode_png(row.image_png)
        return self._images[key]

    def batch(self, step: int, batch_size: int) -> list[Any]:
        from spatialvlm_ros.training.data import Sample, make_sample

        rng = np.random.default_rng([self.seed, 1_000_003, step])
        n_synth = int(rng.binomial(batch_size, self.synthetic_share)) if self.synthetic_share > 0 else 0
        out = [make_sample(rng, self.render_size, self.mix, with_frame=False) for _ in range(n_synth)]
        for i in rng.integers(len(self.rows), size=batch_size - n_synth):
            row = self.rows[int(i)]
            out.append(Sample(self.image(row), row.qa(), None))
        return out

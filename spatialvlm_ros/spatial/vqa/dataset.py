"""The synthesized dataset on disk: Parquet shards that ``datasets.load_dataset("parquet", data_dir=DIR)``
reads, one row per question, a card (README.md), and a per-source progress log that makes runs
resumable and idempotent.

Layout::

    DIR/README.md                     the card: how it was made, the counts, the columns
    DIR/data/<source key>-<n>.parquet one shard per batch of frames (rows of that batch only)
    DIR/.progress/<source key>/<n>.json  written after its shard: frames done, counts, settings

A shard without its progress file was cut off between the two writes: it is deleted and its frames
are done again, so an interrupted run never leaves duplicates. Hidden folders are not data files to
``datasets``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["DATA_DIR", "PROGRESS_DIR", "CARD_FILE", "DatasetDir", "SettingsMismatch", "features",
           "read_table"]

DATA_DIR = "data"
PROGRESS_DIR = ".progress"
CARD_FILE = "README.md"
FORMAT = "spatialvlm_ros.vqa/1"


class SettingsMismatch(RuntimeError):
    """Rows of this source were made with other settings."""


def features() -> Any:
    """The columns as ``datasets.Features`` (images decode to PIL, messages are chat turns)."""
    from datasets import Features, Image, Value

    text_part = {"type": Value("string"), "text": Value("string")}
    obj = {"name": Value("string"), "description": Value("string"), "disambiguated_by": Value("string"),
           "box": [Value("float32")], "score": Value("float32"), "centre_m": [Value("float32")],
           "centre_floor_m": [Value("float32")], "width_m": Value("float32"), "length_m": Value("float32"),
           "height_m": Value("float32")}
    return Features({
        "id": Value("string"),
        "image": Image(),
        "messages": [{"role": Value("string"), "content": [text_part]}],
        "question": Value("string"),
        "answer": Value("string"),
        "kind": Value("string"),
        "category": Value("string"),
        "answer_type": Value("string"),
        "value": Value("float64"),
        "value_text": Value("string"),
        "objects": [obj],
        "source": Value("string"),
        "source_kind": Value("string"),
        "source_path": Value("string"),
        "frame_index": Value("int64"),
        "stamp_ns": Value("int64"),
        "task": Value("string"),
        "target_object": Value("string"),
        "depth_source": Value("string"),
        "intrinsics_source": Value("string"),
        "measurement_frame": Value("string"),
        "detector": Value("string"),
        "depth_model": Value("string"),
        "settings_hash": Value("string"),
    })


_SCHEMA: pa.Schema | None = None


def schema() -> pa.Schema:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = features().arrow_schema
    return _SCHEMA


def source_key(name: str, path: Path) -> str:
    import hashlib

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "source"
    return f"{safe}-{hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:6]}"


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DatasetDir:
    """One output directory; several sources (episodes, image folders) write into it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        (self.root / DATA_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / PROGRESS_DIR).mkdir(exist_ok=True)

    def _shards(self, key: str) -> list[Path]:
        return sorted((self.root / DATA_DIR).glob(f"{key}-*.parquet"))

    def _logs(self, key: str) -> list[Path]:
        folder = self.root / PROGRESS_DIR / key
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def forget(self, key: str) -> None:
        """Delete a source's rows and progress (--force)."""
        for path in self._shards(key) + self._logs(key):
            path.unlink()

    def progress(self, key: str, fingerprint: dict[str, Any]) -> tuple[set[int], Counter, int]:
        """(frames done, counts so far, next batch number) of a source; orphan shards are removed.

        Raises SettingsMismatch when earlier batches were made with other settings."""
        logs = {p.stem: json.loads(p.read_text()) for p in self._logs(key)}
        for shard in self._shards(key):
            if shard.stem.rsplit("-", 1)[-1] not in logs:
                shard.unlink()  # written, but its progress file was not: its frames are redone
        for path in (self.root / DATA_DIR).glob(".*.tmp"):
            path.unlink(missing_ok=True)
        done: set[int] = set()
        counts: Counter = Counter()
        for log in logs.values():
            if log.get("fingerprint") != fingerprint:
                diff = sorted(k for k in set(fingerprint) | set(log.get("fingerprint", {}))
                              if fingerprint.get(k) != log.get("fingerprint", {}).get(k))
                raise SettingsMismatch(f"rows of this source were made with other settings "
                                       f"({', '.join(diff)}); use --force to redo it, or another output "
                                       "directory")
            done.update(log["frames"])
            counts.update(log["counts"])
        batch = 1 + max((int(n) for n in logs), default=-1)
        return done, counts, batch

    def write_batch(self, key: str, batch: int, rows: list[dict[str, Any]], frames: Iterable[int],
                    counts: Counter, fingerprint: dict[str, Any]) -> None:
        """The shard first, then its progress file: a batch counts as done only when both exist."""
        name = f"{batch:06d}"
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema())
            _atomic_write(self.root / DATA_DIR / f"{key}-{name}.parquet", lambda p: pq.write_table(table, p))
        folder = self.root / PROGRESS_DIR / key
        folder.mkdir(exist_ok=True)
        log = {"format": FORMAT, "frames": sorted(int(i) for i in frames), "rows": len(rows),
               "counts": dict(counts), "fingerprint": fingerprint}
        _atomic_write(folder / f"{name}.json", lambda p: p.write_text(json.dumps(log)))

    def totals(self) -> dict[str, Any]:
        """Counts over every source in the directory (for the card)."""
        per_source: dict[str, Counter] = {}
        for folder in sorted((self.root / PROGRESS_DIR).iterdir()):
            if folder.is_dir():
                total: Counter = Counter()
                for path in folder.glob("*.json"):
                    log = json.loads(path.read_text())
                    total.update(log["counts"])
                    total["rows"] += log["rows"]
                per_source[folder.name] = total
        return per_source


def read_table(root: Path | str, columns: list[str] | None = None) -> pa.Table:
    """Every row of a dataset directory (pyarrow; no ``datasets`` needed)."""
    shards = sorted((Path(root) / DATA_DIR).glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{root} holds no {DATA_DIR}/*.parquet: not a spatialvlm_synthesize dataset")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shards])

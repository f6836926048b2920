"""The dataset card (README.md in the dataset directory): how the data was made, its counts, its columns."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pyarrow.compute as pc

from spatialvlm_ros.spatial.vqa.dataset import DatasetDir, read_table
from spatialvlm_ros.spatial.vqa.selection import REJECT_REASONS

__all__ = ["render_card"]


def render_card(dataset: DatasetDir, settings: Any, command: str = "") -> str:
    from spatialvlm_ros import __version__

    per_source = dataset.totals()
    total: Counter = Counter()
    for c in per_source.values():
        total.update(c)
    kinds: dict[str, int] = {}
    detectors: list[str] = []
    try:
        table = read_table(dataset.root, columns=["kind", "detector", "depth_model", "depth_source"])
        kinds = dict(sorted(Counter(table.column("kind").to_pylist()).items()))
        detectors = sorted({f"{d} + {m or 'camera depth'}" for d, m in zip(
            table.column("detector").to_pylist(), table.column("depth_model").to_pylist(), strict=True)})
        depth = dict(Counter(pc.fill_null(table.column("depth_source"), "none").to_pylist()))
    except FileNotFoundError:
        depth = {}
    t = settings.templates
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/*.parquet",
        "task_categories:",
        "- visual-question-answering",
        "tags:",
        "- spatial-reasoning",
        "- robotics",
        "- spatialvlm_ros",
        "---",
        "",
        "# Spatial VQA synthesized from robot frames",
        "",
        f"Made by `spatialvlm_synthesize` (spatialvlm_ros {__version__}), last written "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"    {command}" if command else "",
        "",
        "How: frames were selected (blurred, badly exposed and near-duplicate frames skipped), objects "
        "of the vocabulary were detected and measured by the geometric backend (metric depth lifted "
        "to 3D with the camera intrinsics, floor-aligned frame), named so that each name picks out one "
        "object (several detections of one description are told apart by position or left out), and "
        "asked about with SpatialVLM-style templates. Every answer comes from measured geometry, not "
        "from people: its accuracy is that of the detector and the depth.",
        "",
        "Load it with `datasets.load_dataset(\"parquet\", data_dir=DIR)` (or pyarrow). One row per "
        "question; `messages` is the user turn (image placeholder + question) and the assistant's answer; "
        "`value` holds the exact number (metres, or the clock hour; 1/0 for yes/no); `objects` the "
        "named objects' boxes (pixels) and 3D boxes (camera frame and floor frame, metres); the "
        "remaining columns are provenance. Split for training by `source` (episode), never by frame.",
        "",
        "## Counts",
        "",
        f"- sources: {len(per_source)}; frames seen {total['frames']}, kept {total['kept']} (skipped: "
        + ", ".join(f"{total[r]} {r}" for r in (*REJECT_REASONS, "undecodable")) + ")",
        f"- frames measured {total['measured']}, not measured {total['not_measured']}, without a question "
        f"{total['no_question']}; objects named {total['objects']} ({total['disambiguated']} by position), "
        f"ambiguous descriptions left out {total['ambiguous']}",
        f"- rows (questions): {total['rows']}",
        "- by kind: " + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "none"),
        "- detector + depth: " + ("; ".join(detectors) or "none") + "; depth used: "
        + (", ".join(f"{k} {n}" for k, n in depth.items()) or "none"),
        "",
        "## Settings",
        "",
        f"- vocabulary: {', '.join(settings.objects) or '(none)'}"
        + (" + each episode's target_object" if settings.use_target_object else ""),
        f"- questions per frame {t.questions_per_frame}, qualitative share {t.qualitative_share}, kinds: "
        f"{', '.join(t.kinds)}",
        f"- margins: positions {t.position_margin_m} m, sizes {t.size_margin:.0%}, smallest quantity asked "
        f"{t.min_quantity_m} m, clock directions within {t.direction_margin_deg} degrees of the hour",
        f"- selection: {settings.selection}",
        f"- seed {settings.seed}, every {settings.every} frame(s), images as {settings.image_format}",
        "- the geometric backend's model settings: "
        + (", ".join(f"{k} {v}" for k, v in sorted(settings.model.items()) if k != "model.backend") or "defaults"),
        "",
        "## Per source",
        "",
        "| source | frames | kept | measured | rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {c['frames']} | {c['kept']} | {c['measured']} | {c['rows']} |"
              for name, c in per_source.items()]
    return "\n".join(lines) + "\n"

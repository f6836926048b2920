"""Evaluation of any Estimator on held-out rows of synthesized datasets, with SpatialVLM's measures:
for quantitative (metric) questions the share of answers that state a number and the shares within
[0.5x, 2x] and [0.9x, 1.1x] of the synthesized value; for qualitative questions the accuracy (yes/no and
which-of-two); for clock directions the share naming the right hour."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from spatialvlm_ros.spatial.distance_text import parse_distance
from spatialvlm_ros.spatial.estimator import Estimator, Frame, SpatialQuery
from spatialvlm_ros.spatial.metrics import metric_summary
from spatialvlm_ros.training.evaluate import _closer_right, _yes_no
from spatialvlm_ros.training.vqa_data import VQARow, decode_png

__all__ = ["answer_rows", "evaluate_rows", "format_report", "score_rows"]

_CLOCK = re.compile(r"\b(1[0-2]|[1-9])\s*o['’]?\s*clock", re.IGNORECASE)


def answer_rows(estimator: Estimator, rows: Sequence[VQARow], batch: int = 32, progress: Any = None) -> list[str]:
    """The first raw answer to each row's question on its image."""
    out: list[str] = []
    images: dict[tuple[str, str, int], Frame] = {}
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        items = []
        for r in chunk:
            key = (r.dataset, r.source, r.frame_index)
            if key not in images:
                images[key] = Frame(decode_png(r.image_png))
            names = r.object_names or ("",)
            items.append((images[key], SpatialQuery("distance", names[0], names[-1], r.question)))
        estimates = estimator.estimate(items)
        out.extend(e.raw_answers[0] if e.raw_answers else "" for e in estimates)
        if progress is not None:
            progress.update(len(chunk))
    return out


def _right(row: VQARow, text: str) -> bool:
    if row.answer_type == "yes_no":
        return _yes_no(text) == bool(row.value)
    if row.answer_type == "choice":
        return _closer_right(row.qa(), text)
    if row.answer_type == "clock":
        found = _CLOCK.search(text)
        return found is not None and row.value is not None and int(found.group(1)) == int(row.value)
    raise ValueError(row.answer_type)


def score_rows(rows: Sequence[VQARow], answers: Sequence[str]) -> dict[str, Any]:
    metric = [(r, a) for r, a in zip(rows, answers, strict=True) if r.answer_type == "metres"]
    qual = [(r, a) for r, a in zip(rows, answers, strict=True) if r.answer_type in ("yes_no", "choice")]
    clock = [(r, a) for r, a in zip(rows, answers, strict=True) if r.answer_type == "clock"]
    report: dict[str, Any] = {"n": len(rows)}
    report["quantitative"] = metric_summary([float(r.value) for r, _ in metric],
                                            [parse_distance(a) for _, a in metric])
    report["qualitative"] = {"n": len(qual), "accuracy": (sum(_right(r, a) for r, a in qual) / len(qual))
                             if qual else math.nan}
    report["direction"] = {"n": len(clock), "accuracy": (sum(_right(r, a) for r, a in clock) / len(clock))
                           if clock else math.nan}
    by_kind: dict[str, Any] = {}
    for kind in sorted({r.kind for r in rows}):
        pairs = [(r, a) for r, a in zip(rows, answers, strict=True) if r.kind == kind]
        if pairs[0][0].answer_type == "metres":
            by_kind[kind] = metric_summary([float(r.value) for r, _ in pairs], [parse_distance(a) for _, a in pairs])
        else:
            by_kind[kind] = {"n": len(pairs), "accuracy": sum(_right(r, a) for r, a in pairs) / len(pairs)}
    report["by_kind"] = by_kind
    return report


def evaluate_rows(estimator: Estimator, rows: Sequence[VQARow], show_progress: bool = False) -> dict[str, Any]:
    from tqdm import tqdm

    with tqdm(total=len(rows), desc="evaluate", unit="q", disable=not show_progress) as bar:
        answers = answer_rows(estimator, rows, progress=bar)
    report = score_rows(rows, answers)
    report["examples"] = [{"question": r.question, "truth": r.answer, "answer": a}
                          for r, a in list(zip(rows, answers, strict=True))[:5]]
    return report


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.1%}"


def format_report(name: str, report: dict[str, Any]) -> str:
    q, ql, d = report["quantitative"], report["qualitative"], report["direction"]
    return (f"{name:<28} n={report['n']:<5} numeric {_pct(q['share_numeric'])}  within [0.5x,2x] "
            f"{_pct(q['within_2x'])}  within [0.9x,1.1x] {_pct(q['within_10pct'])}  qualitative "
            f"{_pct(ql['accuracy'])} (n={ql['n']})  direction {_pct(d['accuracy'])} (n={d['n']})")

"""Evaluation of any Estimator on held-out synthetic scenes and approach trajectories.

The held-out sets come from their own random stream (``EVAL_SEED``), disjoint from every training
batch, and are rendered at the demo camera's 640x480. The reward question is asked exactly as the
reward node asks it by default. Measures: SpatialVLM's share of numeric answers and share within
[0.5x, 2x], plus within [0.9x, 1.1x], median relative error and Spearman; accuracy for the yes/no and
which-is-closer questions; per-trajectory Spearman for the approaches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialvlm_ros.spatial.estimator import QUERY_KINDS, Estimator, Frame, SpatialQuery
from spatialvlm_ros.spatial.metrics import metric_summary, spearman
from spatialvlm_ros.spatial.synth import (
    QA,
    REWARD_TEMPLATE,
    Scene,
    closer_qa,
    gap_qa,
    gripper_distance_qa,
    left_right_qa,
    object_distance_qa,
    random_approach,
    random_scene,
    render,
    width_qa,
)

EVAL_SEED = 7_700_001  # the held-out stream; training batches use (seed, step) streams
EVAL_SIZE = (640, 480)
GRIPPER_WORDS = "the robot gripper"  # the reward node's default gripper_description
OTHER_KINDS = ("object_distance", "gap", "width", "left_right", "closer")


@dataclass
class Item:
    frame: Frame
    qa: QA
    scene: Scene | None = None  # the scene asked about, for error analysis (bench/tiny_model_errors.py)


def _frame(scene: Scene) -> Frame:
    result = render(scene)
    return Frame(result.rgb, result.depth_m, scene.camera.intrinsics)


def reward_question(scene: Scene, target: str) -> QA:
    """The question the reward node asks with its default parameters."""
    return gripper_distance_qa(scene, target, template=REWARD_TEMPLATE, gripper=GRIPPER_WORDS)


def heldout_items(n_scenes: int, per_kind: int = 0, size: tuple[int, int] = EVAL_SIZE,
                  seed: int = EVAL_SEED) -> list[Item]:
    """``n_scenes`` reward questions (one scene each, the target drawn at random), then ``per_kind``
    questions of each other kind."""
    items: list[Item] = []
    for i in range(n_scenes):
        rng = np.random.default_rng([seed, 0, i])
        scene = random_scene(rng).at_resolution(*size)
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        items.append(Item(_frame(scene), reward_question(scene, target.description), scene))
    makers = {"object_distance": object_distance_qa, "gap": gap_qa, "left_right": left_right_qa,
              "closer": closer_qa}
    for k, kind in enumerate(OTHER_KINDS):
        i = 0
        made = 0
        while made < per_kind:
            rng = np.random.default_rng([seed, 1 + k, i])
            i += 1
            scene = random_scene(rng).at_resolution(*size)
            a, b = (scene.objects[int(j)] for j in rng.choice(len(scene.objects), size=2, replace=False))
            qa = width_qa(scene, a, rng) if kind == "width" else makers[kind](scene, a, b, rng)
            if qa is not None:
                items.append(Item(_frame(scene), qa, scene))
                made += 1
    return items


def heldout_trajectories(n: int, frames: int, size: tuple[int, int] = EVAL_SIZE,
                         seed: int = EVAL_SEED) -> list[list[Item]]:
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 99, i])
        traj = random_approach(rng, frames)
        out.append([Item(_frame(s.at_resolution(*size)), reward_question(s, traj.target), s) for s in traj.scenes])
    return out


def _query(qa: QA) -> SpatialQuery:
    """The query a backend is asked; its text is the question, its kind tells a geometric backend what
    to measure."""
    if qa.kind == "gap":
        return SpatialQuery("gap_width", qa.objects[0], qa.objects[1], qa.question)
    if qa.kind == "width" and "width" in QUERY_KINDS:
        return SpatialQuery("width", qa.objects[0], "", qa.question)
    b = qa.objects[1] if len(qa.objects) > 1 else qa.objects[0]
    return SpatialQuery("distance", qa.objects[0], b, qa.question)


def answer_items(estimator: Estimator, items: Sequence[Item], batch: int = 32,
                 progress: Any = None) -> list[tuple[float | None, str]]:
    """(parsed metres or None, first raw answer) per item."""
    out: list[tuple[float | None, str]] = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        estimates = estimator.estimate([(it.frame, _query(it.qa)) for it in chunk])
        out.extend((e.value_m, e.raw_answers[0] if e.raw_answers else "") for e in estimates)
        if progress is not None:
            progress.update(len(chunk))
    return out


def _yes_no(text: str) -> bool | None:
    words = text.strip().lower()
    if words.startswith("yes"):
        return True
    if words.startswith("no"):
        return False
    return None


def _closer_right(qa: QA, text: str) -> bool:
    said = " ".join(text.lower().replace(".", " ").split())
    right = str(qa.value).lower().removeprefix("the ")
    others = [o.lower().removeprefix("the ") for o in qa.objects if o.lower().removeprefix("the ") != right]
    return right in said and not any(o in said for o in others)


def score(items: Sequence[Item], answers: Sequence[tuple[float | None, str]]) -> dict[str, Any]:
    by_kind: dict[str, list[tuple[Item, tuple[float | None, str]]]] = {}
    for it, ans in zip(items, answers, strict=True):
        by_kind.setdefault(it.qa.kind, []).append((it, ans))
    result: dict[str, Any] = {}
    for kind, pairs in by_kind.items():
        if pairs[0][0].qa.metric:
            result[kind] = metric_summary([float(it.qa.value) for it, _ in pairs], [a[0] for _, a in pairs])
        elif kind == "left_right":
            result[kind] = {"n": len(pairs),
                            "accuracy": float(np.mean([_yes_no(a[1]) == it.qa.value for it, a in pairs]))}
        else:
            result[kind] = {"n": len(pairs), "accuracy": float(np.mean([_closer_right(it.qa, a[1])
                                                                        for it, a in pairs]))}
    return result


def score_trajectories(trajs: Sequence[Sequence[Item]],
                       answers: Sequence[Sequence[tuple[float | None, str]]]) -> dict[str, Any]:
    per: list[float] = []
    truth_all: list[float] = []
    est_all: list[float | None] = []
    for items, ans in zip(trajs, answers, strict=True):
        truth = [float(it.qa.value) for it in items]
        est = [a[0] for a in ans]
        truth_all += truth
        est_all += est
        ok = [(t, e) for t, e in zip(truth, est, strict=True) if e is not None]
        per.append(spearman([t for t, _ in ok], [e for _, e in ok]) if len(ok) >= 3 else math.nan)
    finite = [s for s in per if math.isfinite(s)]
    return {
        "n": len(trajs),
        "frames": len(trajs[0]) if trajs else 0,
        "spearman_per_trajectory": [round(s, 4) if math.isfinite(s) else None for s in per],
        "spearman_mean": float(np.mean(finite)) if finite else math.nan,
        "spearman_min": float(np.min(finite)) if finite else math.nan,
        "share_monotone_0.9": float(np.mean([s >= 0.9 for s in finite])) if finite else 0.0,
        "pooled": metric_summary(truth_all, est_all),
    }


def evaluate(estimator: Estimator, n_scenes: int = 200, per_kind: int = 40, n_trajectories: int = 8,
             frames: int = 12, size: tuple[int, int] = EVAL_SIZE, show_progress: bool = True) -> dict[str, Any]:
    """The full report: held-out questions by kind and the approach trajectories."""
    from tqdm import tqdm

    items = heldout_items(n_scenes, per_kind, size)
    trajs = heldout_trajectories(n_trajectories, frames, size)
    total = len(items) + sum(len(t) for t in trajs)
    with tqdm(total=total, desc="evaluate", unit="q", disable=not show_progress) as bar:
        answers = answer_items(estimator, items, progress=bar)
        traj_answers = [answer_items(estimator, t, progress=bar) for t in trajs]
    report = {"heldout": score(items, answers), "trajectories": score_trajectories(trajs, traj_answers)}
    report["examples"] = [{"question": it.qa.question, "truth": it.qa.answer, "answer": a[1]}
                          for it, a in list(zip(items, answers, strict=True))[:5]]
    return report

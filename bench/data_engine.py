#!/usr/bin/env python3
"""Data engine bench: record -> synthesize -> fine-tune -> compare, on a domain the shipped model never saw.

    .venv/bin/python bench/data_engine.py [--train-episodes 10 --val-episodes 3 --test-episodes 4]
        [--frames 12] [--steps 600] [--lr 1e-3] [--eval-set test|validation] [--out DIR] [--quick]

1. Renders episodes of ``synth.domain`` (pink/cyan/brown/lime boxes and cylinders on a dark table, a camera
   ~75 cm up panning 20-30 degrees; the shipped tiny model was trained on cubes and cylinders of six other
   colours from a fixed camera 50 cm up) in three disjoint random streams: train, validation, test.
2. Records every episode through a real recorder_node (``episode_player``: rgb8 image, 16UC1 depth,
   camera_info over rclpy, the record service, target_object set as a parameter).
3. Synthesizes each set with ``spatialvlm_synthesize`` (its main(), the user's command line) using the
   geometric backend with the recorded depth and a DETECTOR STAND-IN that returns the renderer's true
   boxes (no detector weights exist offline). Every synthesized row is checked against the scene's truth:
   share of quantitative values within [0.9x, 1.1x], qualitative answers right.
4. Fine-tunes the shipped tiny model (``spatialvlm_train --init builtin:tiny-spatial --data train``) and
   evaluates before and after on the held-out set with SpatialVLM's measures. Settings (steps, lr, batch)
   were chosen on --eval-set validation; the README reports --eval-set test.

Prints a table; the machine is contended (2 shared cores), so times are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# A private DDS domain and log folder unless the caller chose them; OpenMP threads that do not busy-wait
# (on a shared CPU they made torch 5-10x slower). Set before rclpy and torch load.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 200))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="data_engine_roslog_"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = {"train": 1, "validation": 2, "test": 3}


def make_episodes(seed: int, group: str, n: int, frames: int):
    from spatialvlm_ros.spatial.synth.domain import domain_episode

    return [domain_episode(np.random.default_rng([seed, GROUPS[group], i]), frames=frames,
                           twins=(i % 4 == 3)) for i in range(n)]


def check_truth(dataset: Path, episodes_by_dir: dict[str, object]) -> dict[str, float]:
    """Every row against the renderer's truth."""
    from spatialvlm_ros.spatial.synth.vqa_truth import row_truth
    from spatialvlm_ros.spatial.vqa.dataset import read_table

    rows = read_table(dataset).drop_columns(["image"]).to_pylist()
    metric_ok = metric_n = qual_ok = qual_n = clock_ok = clock_n = 0
    for row in rows:
        episode = episodes_by_dir[row["source"]]
        truth = row_truth(row, episode.frames[row["frame_index"]])
        if row["answer_type"] == "metres":
            metric_n += 1
            metric_ok += truth.right
        elif row["answer_type"] == "clock":
            clock_n += 1
            clock_ok += truth.right
        else:
            qual_n += 1
            qual_ok += truth.right
    return {"rows": len(rows), "metric_n": metric_n, "metric_within_10pct": metric_ok / max(metric_n, 1),
            "qualitative_n": qual_n, "qualitative_right": qual_ok / max(qual_n, 1),
            "direction_n": clock_n, "direction_right": clock_ok / max(clock_n, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-episodes", type=int, default=10)
    p.add_argument("--val-episodes", type=int, default=3)
    p.add_argument("--test-episodes", type=int, default=4)
    p.add_argument("--frames", type=int, default=12, help="frames per episode")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--synthetic-share", type=float, default=0.0)
    p.add_argument("--eval-set", choices=("test", "validation"), default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="keep everything here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="4/2/2 episodes of 8 frames, 60 steps (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.train_episodes, args.val_episodes, args.test_episodes, args.frames, args.steps = 4, 2, 2, 8, 60
    out = args.out or Path(tempfile.mkdtemp(prefix="data_engine_"))
    out.mkdir(parents=True, exist_ok=True)

    from spatialvlm_ros import synthesize, train
    from spatialvlm_ros.episode_player import record_episodes
    from spatialvlm_ros.spatial.estimator import ModelConfig
    from spatialvlm_ros.spatial.geometric import GeometricEstimator
    from spatialvlm_ros.spatial.synth.domain import DOMAIN_COLOURS, DOMAIN_SHAPES, CategoryTruthDetector

    timings: dict[str, float] = {}
    sets = {"train": args.train_episodes, "validation": args.val_episodes, "test": args.test_episodes}
    t0 = time.monotonic()
    episodes = {g: make_episodes(args.seed, g, n, args.frames) for g, n in sets.items()}
    timings["render"] = time.monotonic() - t0

    t0 = time.monotonic()
    dirs: dict[str, list[Path]] = {}
    by_dir: dict[str, object] = {}
    for group, eps in episodes.items():
        dirs[group] = record_episodes(eps, out / "episodes" / group)
        by_dir.update({d.name: e for d, e in zip(dirs[group], eps, strict=True)})
    timings["record"] = time.monotonic() - t0

    detector = CategoryTruthDetector()
    for eps in episodes.values():
        for e in eps:
            for r in e.frames:
                detector.register(r)

    def estimator_factory():
        return GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector,
                                  depth_model=None)

    vocabulary = [f"{c} {s}" for c in DOMAIN_COLOURS for s in DOMAIN_SHAPES]
    t0 = time.monotonic()
    truth = {}
    for group in sets:
        dataset = out / "vqa" / group
        code = synthesize.main([str(out / "episodes" / group), "-o", str(dataset), "--objects", *vocabulary,
                                "--no-progress"], estimator_factory=estimator_factory)
        if code != 0:
            print(f"spatialvlm_synthesize exited {code} on {group}")
            return 1
        truth[group] = check_truth(dataset, by_dir)
    timings["synthesize"] = time.monotonic() - t0

    t0 = time.monotonic()
    model = out / "model"
    held = [d.name for d in dirs[args.eval_set]]
    code = train.main([str(model), "--init", "builtin:tiny-spatial", "--data", str(out / "vqa" / "train"),
                       str(out / "vqa" / args.eval_set), "--heldout", *held, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup", "20",
                       "--synthetic-share", str(args.synthetic_share), "--quiet", "--save-every", "1000"])
    timings["train_and_eval"] = time.monotonic() - t0
    if code != 0:
        return code
    metrics = json.loads((model / "metrics.json").read_text())

    print()
    print(f"data engine bench ({out}); contended 2-core machine: times are indicative")
    print(f"episodes: {', '.join(f'{g} {n}' for g, n in sets.items())} x {args.frames} frames; "
          f"render {timings['render']:.0f} s, record {timings['record']:.0f} s, synthesize "
          f"{timings['synthesize']:.0f} s, fine-tune + evaluate {timings['train_and_eval']:.0f} s")
    print("\nsynthesized answers against the renderer's truth:")
    print(f"  {'set':<11} {'rows':>5} {'quantitative in [0.9x,1.1x]':>28} {'qualitative right':>18} "
          f"{'direction right':>16}")
    for group, t in truth.items():
        print(f"  {group:<11} {t['rows']:>5} {t['metric_within_10pct']:>22.1%} (n={t['metric_n']}) "
              f"{t['qualitative_right']:>10.1%} (n={t['qualitative_n']}) {t['direction_right']:>8.1%} "
              f"(n={t['direction_n']})")
    print(f"\nheld-out {args.eval_set} episodes ({metrics['data_split']['heldout_rows']} questions), truth = "
          "synthesized values:")
    print(f"  {'model':<34} {'numeric':>8} {'[0.5x,2x]':>10} {'[0.9x,1.1x]':>12} {'qualitative':>12} "
          f"{'direction':>10}")
    for name, label in (("before", "shipped tiny model"), ("after", f"fine-tuned ({args.steps} steps)")):
        m = metrics[name]
        q = m["quantitative"]
        print(f"  {label:<34} {q['share_numeric']:>8.1%} {q['within_2x']:>10.1%} {q['within_10pct']:>12.1%} "
              f"{m['qualitative']['accuracy']:>12.1%} {m['direction']['accuracy']:>10.1%}")
    before, after = metrics["before"]["quantitative"]["within_2x"], metrics["after"]["quantitative"]["within_2x"]
    print(f"\nwithin [0.5x,2x]: {after:.1%} after vs {before:.1%} before "
          f"(ratio {after / before:.2f}x)" if before > 0 else f"\nwithin [0.5x,2x]: {after:.1%} after vs 0 before")
    return 0


if __name__ == "__main__":
    sys.exit(main())

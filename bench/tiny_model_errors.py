"""Where a VLM's gripper-to-object distances go wrong on held-out synthetic scenes: the wrong object, or
a misjudged distance.

For each held-out reward question (the same 200 scenes spatialvlm_train evaluates on) the answer is
compared with the gripper's distance to every object in the scene. An answer off by more than 15% that
is nearer (in log ratio) another object's distance than the named one's counts as a wrong-object
answer; how often that other object shares the named one's colour is printed too. The baseline of the
same run is what a model that always named a random object of the scene would score on that count.

    .venv/bin/python bench/tiny_model_errors.py                         # the shipped model, ~15 s
    .venv/bin/python bench/tiny_model_errors.py --model out/tiny_spatial --scenes 400
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator
from spatialvlm_ros.spatial.metrics import metric_summary
from spatialvlm_ros.training.evaluate import answer_items, heldout_items

OFF = math.log(1.15)


def nearest_object(distances: dict[str, float], value: float) -> str:
    return min(distances, key=lambda name: abs(math.log(value / distances[name])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:tiny-spatial")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    estimator = build_estimator(ModelConfig(name_or_path=args.model, device=args.device, max_new_tokens=16))
    estimator.max_batch_size = 32
    try:
        items = heldout_items(args.scenes)
        answers = answer_items(estimator, items)
    finally:
        estimator.close()
    rng = np.random.default_rng(0)
    wrong = same_colour = off = random_wrong = 0
    for item, (value, _) in zip(items, answers, strict=True):
        named = item.qa.objects[1]
        distances = {o.description: item.scene.gripper_distance(o) for o in item.scene.objects}
        guess = item.scene.objects[int(rng.integers(len(item.scene.objects)))].description
        random_wrong += abs(math.log(distances[guess] / distances[named])) > OFF
        if value is None or abs(math.log(value / distances[named])) <= OFF:
            continue
        off += 1
        other = nearest_object(distances, value)
        if other != named:
            wrong += 1
            same_colour += item.scene.find(other).colour == item.scene.find(named).colour
    summary = metric_summary([float(it.qa.value) for it in items], [a[0] for a in answers])
    n = len(items)
    print(f"{args.model}: {n} held-out reward questions, Spearman {summary['spearman']:.3f}, "
          f"within [0.5x,2x] {summary['within_2x']:.1%}")
    print(f"  off by more than 15%:                 {off:4d} ({off / n:.1%})")
    print(f"  of those, nearer another object's:    {wrong:4d} ({wrong / n:.1%}); same colour as the named one: "
          f"{same_colour}")
    print(f"  baseline, a random object of the scene: {random_wrong:4d} ({random_wrong / n:.1%}) more than 15% "
          f"from the named one's distance; ratio wrong-object / baseline {wrong / max(random_wrong, 1):.2f}")


if __name__ == "__main__":
    main()

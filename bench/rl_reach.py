#!/usr/bin/env python3
"""Can the spatial reward train a policy? SAC on a synthetic reach task under three rewards.

    .venv/bin/python bench/rl_reach.py [--steps 3000] [--seeds 1] [--out bench/rl_reach.png]

The environment (``spatialvlm_ros.rl.SyntheticReachEnv``): a gripper moved by continuous actions (a
displacement of up to 4 cm per step, 30 steps per episode) among 3 random objects on the synthetic table;
a random one is the target, named in words; episodes start at least ``--min-start`` (0.3 m) from it. Policy observations are low-dimensional state (gripper and
target positions); only the reward differs between the three runs, at the same step budget:

  oracle   -10 x the true gripper-to-target distance, from the simulator;
  spatial  -10 x the distance the shipped tiny spatial model (``builtin:tiny-spatial``) reads from each
           step's rendered 224x168 frame, asked "How far is the robot gripper from <target>?", through
           ``SpatialRewardWrapper`` (in process, the same core estimator and shaper reward_node uses);
  sparse   +10 on steps within the success radius, else 0.

Success: the gripper ends the episode within ``--success-margin`` (2 cm) of the resting distance straight
above the target (the truth decides, whatever the reward). Every ``--eval-every`` steps each policy runs deterministically on the
same ``--eval-episodes`` held-out episodes; the printed table is the last evaluation, the PNG the curves.
The spatial run also reports how its distances compared with the truth on the frames it trained on.
Exit status 0 when the spatial policy reached >= 80 % of the oracle's success rate, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch initialises OpenMP (ENVIRONMENT.md)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ("oracle", "spatial", "sparse")
REWARD_SCALE = 10.0


@dataclass
class Curve:
    reward: str
    seed: int
    steps: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    final_distance_m: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time: about the wall time it would take alone (1 thread)
    model_calls: int = 0
    model_s: float = 0.0
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (estimated, true) distances
    missing: int = 0


def evaluate(policy, episodes: int, env_kwargs: dict) -> tuple[float, float]:
    """Success rate and median final true distance over the held-out episodes (seeds 10000+i)."""
    from spatialvlm_ros.rl.reach_env import SyntheticReachEnv

    env = SyntheticReachEnv(**env_kwargs)
    successes, finals = 0, []
    for i in range(episodes):
        obs, info = env.reset(seed=10_000 + i)
        done = False
        while not done:
            action, _ = policy.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes += bool(info["success"])
        finals.append(info["true_distance_m"])
    return successes / episodes, float(np.median(finals))


class TimedEstimator:
    """Counts and times the model calls of the spatial run (the bench's own figures)."""

    def __init__(self, inner) -> None:
        self.inner, self.backend, self.model_name = inner, inner.backend, inner.model_name
        self.calls, self.seconds = 0, 0.0

    def estimate(self, items, samples: int = 1):
        t = time.perf_counter()
        try:
            return self.inner.estimate(items, samples)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t

    def close(self) -> None:
        self.inner.close()


def train(reward: str, seed: int, args: argparse.Namespace, estimator) -> Curve:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from spatialvlm_ros.rl.reach_env import SyntheticReachEnv
    from spatialvlm_ros.rl.wrapper import SpatialRewardWrapper
    from spatialvlm_ros.spatial.reward import RewardConfig

    env_kwargs = {"max_steps": args.episode_steps, "success_margin_m": args.success_margin,
                  "min_start_distance_m": args.min_start}
    curve = Curve(reward, seed)
    if reward == "sparse":
        env: gym.Env = SyntheticReachEnv(reward="sparse", reward_scale=REWARD_SCALE, **env_kwargs)
    elif reward == "oracle":
        env = SyntheticReachEnv(reward="distance", reward_scale=REWARD_SCALE, **env_kwargs)
    else:
        env = SpatialRewardWrapper(SyntheticReachEnv(**env_kwargs), estimator=estimator,
                                   reward_config=RewardConfig(scale=REWARD_SCALE))

    class Recorder(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                spatial = info.get("spatial")
                if spatial is not None and spatial.get("distance_m") is not None:
                    curve.pairs.append((spatial["distance_m"], info["true_distance_m"]))
            if self.num_timesteps % args.eval_every == 0:
                rate, final = evaluate(self.model, args.eval_episodes, env_kwargs)
                curve.steps.append(self.num_timesteps)
                curve.success.append(rate)
                curve.final_distance_m.append(final)
                print(f"  {reward:<8} seed {seed}  step {self.num_timesteps:>6}  success {rate:5.0%}  "
                      f"median final distance {final:.3f} m  ({time.monotonic() - start:.0f} s)", flush=True)
            return True

    model = SAC("MlpPolicy", env, learning_rate=1e-3, buffer_size=args.steps, learning_starts=args.learning_starts,
                batch_size=128, gamma=0.95, policy_kwargs={"net_arch": [64, 64]}, seed=seed, device="cpu",
                verbose=0)
    start, cpu0 = time.monotonic(), time.process_time()
    model.learn(total_timesteps=args.steps, callback=Recorder())
    curve.wall_s, curve.cpu_s = time.monotonic() - start, time.process_time() - cpu0
    if estimator is not None and reward == "spatial":
        curve.model_calls, curve.model_s = estimator.calls, estimator.seconds
        estimator.calls, estimator.seconds = 0, 0.0
    return curve


def plot(curves: list[Curve], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"oracle": "tab:green", "spatial": "tab:blue", "sparse": "tab:red"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for c in curves:
        label = f"{c.reward} (seed {c.seed})" if len({x.seed for x in curves}) > 1 else c.reward
        ax1.plot(c.steps, [100 * s for s in c.success], color=colours[c.reward], label=label, marker="o", ms=3)
        ax2.plot(c.steps, c.final_distance_m, color=colours[c.reward], label=label, marker="o", ms=3)
    ax1.set_xlabel("environment steps")
    ax1.set_ylabel("success rate on held-out episodes (%)")
    ax1.set_ylim(-3, 103)
    ax2.set_xlabel("environment steps")
    ax2.set_ylabel("median final distance (m)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="environment steps per run (default 3000)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per reward (default 1)")
    parser.add_argument("--rewards", default=",".join(REWARDS), help="comma-separated subset of "
                        f"{', '.join(REWARDS)}")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations (default 250)")
    parser.add_argument("--eval-episodes", type=int, default=30, help="held-out episodes per evaluation")
    parser.add_argument("--episode-steps", type=int, default=30, help="steps per episode (default 30)")
    parser.add_argument("--success-margin", type=float, default=0.02,
                        help="success radius around the resting point above the target, metres (default 0.02)")
    parser.add_argument("--min-start", type=float, default=0.3,
                        help="episodes start at least this far from the target, metres (default 0.3)")
    parser.add_argument("--learning-starts", type=int, default=500, help="random steps before SAC learns")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "rl_reach.png", help="learning curves PNG")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    rewards = [r.strip() for r in args.rewards.split(",") if r.strip()]
    bad = [r for r in rewards if r not in REWARDS]
    if bad or not rewards:
        parser.error(f"--rewards: unknown {bad}; accepted: {', '.join(REWARDS)}")
    args.rewards = rewards
    if args.steps < args.eval_every or args.eval_every < 1:
        parser.error("--steps must be at least --eval-every (>= 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from spatialvlm_ros.models import shipped_model_path
    from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator
    from spatialvlm_ros.spatial.metrics import spearman

    estimator = None
    load_s = 0.0
    if "spatial" in args.rewards:
        t = time.perf_counter()
        estimator = TimedEstimator(build_estimator(ModelConfig(
            name_or_path=str(shipped_model_path()), device="cpu", max_new_tokens=16)))
        load_s = time.perf_counter() - t
    load0 = os.getloadavg()[0]
    print(f"rl_reach: SAC, {args.steps} steps per run, {args.seeds} seed(s), rewards {', '.join(args.rewards)}; "
          f"{os.cpu_count()} CPUs, torch {args.threads} thread(s), load average {load0:.1f} at start", flush=True)
    t0 = time.monotonic()
    curves: list[Curve] = []
    try:
        for seed in range(args.seeds):
            for reward in args.rewards:
                curves.append(train(reward, seed, args, estimator))
    finally:
        if estimator is not None:
            estimator.close()
    total_s = time.monotonic() - t0
    load1 = os.getloadavg()[0]

    print()
    header = (f"{'reward':<9}{'success':>9}{'mean over evals':>17}{'final distance':>16}{'wall':>8}{'CPU':>8}"
              f"{'model calls':>13}{'ms/call':>9}")
    print(header)
    print("-" * len(header))
    summary: dict[str, dict] = {}
    for reward in args.rewards:
        runs = [c for c in curves if c.reward == reward]
        rate = float(np.mean([c.success[-1] for c in runs]))
        area = float(np.mean([np.mean(c.success) for c in runs]))  # the learning curve's area, per eval
        final = float(np.mean([c.final_distance_m[-1] for c in runs]))
        wall = float(np.mean([c.wall_s for c in runs]))
        cpu = float(np.mean([c.cpu_s for c in runs]))
        calls = sum(c.model_calls for c in runs)
        ms = 1e3 * sum(c.model_s for c in runs) / calls if calls else None
        summary[reward] = {"success_rate": rate, "mean_success_over_evals": area, "median_final_distance_m": final, "wall_s": wall, "cpu_s": cpu,
                           "model_calls": calls, "ms_per_model_call": ms,
                           "curves": [{"seed": c.seed, "steps": c.steps, "success": c.success,
                                       "final_distance_m": c.final_distance_m} for c in runs]}
        print(f"{reward:<9}{rate:>9.0%}{area:>17.0%}{final:>14.3f} m{wall:>7.0f}s{cpu:>7.0f}s{calls or '-':>13}"
              f"{'-' if ms is None else f'{ms:.1f}':>9}")
    print("-" * len(header))
    ok = True
    if "spatial" in summary:
        pairs = [p for c in curves if c.reward == "spatial" for p in c.pairs]
        est, true = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        rel = np.abs(est - true) / true
        rho = spearman(est.tolist(), true.tolist()) if len(pairs) >= 3 else float("nan")
        summary["spatial"].update(frames=len(pairs), spearman=rho, median_rel_error=float(np.median(rel)),
                                  within_25pct=float(np.mean(rel <= 0.25)), model_load_s=load_s)
        print(f"spatial reward on its {len(pairs)} training frames: Spearman {rho:.3f} with the true distance, "
              f"median relative error {np.median(rel):.1%}, {np.mean(rel <= 0.25):.0%} within 25 %")
    if "spatial" in summary and "oracle" in summary:
        o, s = summary["oracle"]["success_rate"], summary["spatial"]["success_rate"]
        ratio = s / o if o > 0 else float("nan")
        ok = o > 0 and ratio >= 0.8
        print(f"spatial / oracle success rate: {ratio:.2f} ({'>=' if ok else '<'} 0.80)")
        summary["spatial_over_oracle"] = ratio
    if "sparse" in summary:
        print(f"sparse success rate {summary['sparse']['success_rate']:.0%}")
    cpu_total = sum(c.cpu_s for c in curves)
    print(f"total {total_s / 60:.1f} min wall, {cpu_total / 60:.1f} min CPU (wall and CPU per run are means over "
          f"seeds); load average {load0:.1f} at start, {load1:.1f} at end ({os.cpu_count()} CPUs: above that, "
          "other work shared them and the wall times are inflated)")
    title = (f"SAC on SyntheticReachEnv, {args.steps} steps per reward, {args.eval_episodes} held-out episodes "
             f"per point; spatial = builtin:tiny-spatial on 224x168 frames")
    plot(curves, args.out, title)
    print(f"learning curves: {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                                         "summary": summary, "total_s": total_s,
                                         "load_average": [load0, load1]}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The RL side: the synthetic reach environment, potential shaping, and SpatialRewardWrapper in both modes
(in process through the core estimator, and through a real reward_node process via RewardClient).

The wrapper runs the shipped tiny spatial model (builtin:tiny-spatial), so its rewards are real readings
of the rendered frames; a refusing estimator checks the missing-reward path.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import VENV_BIN, start_process

from spatialvlm_ros.rl.reach_env import SyntheticReachEnv, rest_distance_m
from spatialvlm_ros.rl.wrapper import RewardUnavailable, SpatialRewardWrapper
from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator, combine_answers
from spatialvlm_ros.spatial.metrics import spearman
from spatialvlm_ros.spatial.reward import RewardConfig, potential_difference

ROOT_BENCH = Path(__file__).resolve().parents[1] / "bench" / "rl_reach.py"
ACTIONS = [np.array(a, np.float32) for a in
           ([1, 0, 0], [0, 1, 0], [0, 0, -1], [-1, -1, 1], [0.5, -0.5, 0.0], [0, 0, 1])]


@pytest.fixture(scope="module")
def shipped():
    est = build_estimator(ModelConfig(name_or_path="builtin:tiny-spatial", device="cpu", max_new_tokens=16))
    yield est
    est.close()


def toward_target(env: SyntheticReachEnv) -> np.ndarray:
    """A scripted policy: straight at the resting point above the target."""
    goal = env.target.centre + np.array([0, 0, rest_distance_m(env.target)])
    delta = (goal - env.tcp) / env.step_m
    return np.clip(delta, -1, 1).astype(np.float32)


# ------------------------------------------------------------------ the environment

def test_reach_env_is_seeded_moves_and_keeps_the_gripper_out_of_objects():
    env = SyntheticReachEnv(max_steps=40)
    obs1, info1 = env.reset(seed=3)
    obs2, info2 = SyntheticReachEnv(max_steps=40).reset(seed=3)
    assert np.array_equal(obs1, obs2) and info1["target"] == info2["target"]
    assert env.observation_space.contains(obs1) and obs1.shape == (9,)
    assert info1["true_distance_m"] >= 0.2 and not info1["success"]
    frame = env.render()
    assert frame.shape == (168, 224, 3) and frame.dtype == np.uint8
    distances = [info1["true_distance_m"]]
    for _ in range(40):
        _, reward, terminated, truncated, info = env.step(toward_target(env))
        assert reward == pytest.approx(-info["true_distance_m"]) and not terminated
        distances.append(info["true_distance_m"])
        # never inside the target: at best resting on top of it
        assert info["true_distance_m"] >= rest_distance_m(env.target) - 1e-6
    assert truncated and info["success"], distances
    assert distances[-1] < distances[0]
    sparse = SyntheticReachEnv(reward="sparse", reward_scale=10.0)
    sparse.reset(seed=3)
    assert sparse.step(np.zeros(3, np.float32))[1] == 0.0
    with pytest.raises(ValueError, match="accepted: distance, sparse"):
        SyntheticReachEnv(reward="dense")


def test_reach_env_passes_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(SyntheticReachEnv(), skip_render_check=False)


# ------------------------------------------------------------------ potential shaping

def test_potential_difference_telescopes_and_respects_terminal_states():
    d = [0.5, 0.4, 0.45, 0.2]
    gamma = 0.9
    terms = [potential_difference(d[i], d[i + 1], gamma, scale=2.0) for i in range(3)]
    assert terms[0] == pytest.approx(2.0 * (0.5 - 0.9 * 0.4))
    discounted = sum(gamma ** t * f for t, f in enumerate(terms))
    assert discounted == pytest.approx(gamma ** 3 * (-2.0 * d[3]) - (-2.0 * d[0]))  # gamma^T Phi(s_T) - Phi(s_0)
    assert potential_difference(0.3, None, gamma, terminal=True) == pytest.approx(0.3)  # Phi(terminal) = 0
    assert potential_difference(0.3, 0.3, 1.0) == 0.0
    for bad in ((0.3, None, gamma), (0.3, -0.1, gamma), (float("nan"), 0.2, gamma), (0.3, 0.2, 1.5)):
        with pytest.raises(ValueError):
            potential_difference(*bad)


# ------------------------------------------------------------------ the wrapper, in process

def test_wrapper_in_process_rewards_the_model_reading_of_each_frame(shipped):
    env = SpatialRewardWrapper(SyntheticReachEnv(max_steps=12), estimator=shipped,
                               reward_config=RewardConfig(scale=2.0))
    obs, info = env.reset(seed=5)
    assert info["spatial"]["target"] == env.unwrapped.target_description
    assert info["spatial"]["distance_m"] is not None
    estimated, true = [], []
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(toward_target(env.unwrapped))
        spatial = info["spatial"]
        assert spatial["status"] == "rewarded" and not spatial["missing"]
        assert reward == pytest.approx(-2.0 * spatial["distance_m"])  # the node's negative_distance shaping
        assert spatial["env_reward"] == pytest.approx(-info["true_distance_m"])  # kept beside it
        estimated.append(spatial["distance_m"])
        true.append(info["true_distance_m"])
    # the model reads the approach: its distances follow the true ones
    assert spearman(estimated, true) >= 0.7, (estimated, true)
    assert all(0.4 <= e / t <= 2.5 for e, t in zip(estimated, true, strict=True)), (estimated, true)


def test_wrapper_potential_shaping_per_step(shipped):
    """gamma * Phi(s') - Phi(s) on each step's own reading, even with a smoothing window configured (the
    potential must be a function of the frame alone)."""
    env = SpatialRewardWrapper(SyntheticReachEnv(max_steps=5), estimator=shipped, shaping="potential",
                               gamma=0.9, reward_config=RewardConfig(scale=2.0, smoothing_window=3))
    _, info = env.reset(seed=8)
    previous = info["spatial"]["raw_distance_m"]
    for action in ACTIONS[:4]:
        _, reward, _, _, info = env.step(action)
        d = info["spatial"]["raw_distance_m"]
        assert reward == pytest.approx(2.0 * (previous - 0.9 * d))
        previous = d


class Refuses:
    backend, model_name = "scripted", "refuses"

    def estimate(self, items, samples=1):
        return [combine_answers(q, ["I cannot tell."]) for _, q in items]

    def close(self):
        pass


def test_wrapper_never_invents_a_reward():
    env = SpatialRewardWrapper(SyntheticReachEnv(), estimator=Refuses())
    env.reset(seed=1)
    with pytest.raises(RewardUnavailable, match="no distance in the model's answer"):
        env.step(ACTIONS[0])
    flagged = SpatialRewardWrapper(SyntheticReachEnv(), estimator=Refuses(), missing_reward=-1.0)
    flagged.reset(seed=1)
    _, reward, _, _, info = flagged.step(ACTIONS[0])
    assert reward == -1.0 and info["spatial"]["missing"] and info["spatial"]["status"] == "no_distance"
    with pytest.raises(ValueError, match="exactly one of"):
        SpatialRewardWrapper(SyntheticReachEnv(), estimator=Refuses(), client=object())
    with pytest.raises(ValueError, match="accepted: node, potential"):
        SpatialRewardWrapper(SyntheticReachEnv(), estimator=Refuses(), shaping="progress")


# ------------------------------------------------------------------ the wrapper through a real reward_node

def test_wrapper_through_a_running_reward_node_matches_in_process(shipped):
    """reward_node as its own process (frame_policy every, the shipped model): each step publishes its
    frame and waits for that frame's reward; greedy answers on lossless rgb8 frames equal the in-process
    ones step for step, across a target change between episodes."""
    import rclpy

    from spatialvlm_ros.client import RewardClient

    node = start_process([str(VENV_BIN / "reward_node"), "--ros-args",
                          "-p", "model.name_or_path:=builtin:tiny-spatial", "-p", "model.max_new_tokens:=16",
                          "-p", "frame_policy:=every"])
    rclpy.init()
    client = RewardClient()
    try:
        assert client.wait_for_node(120), "reward_node did not come up"
        ros_env = SpatialRewardWrapper(SyntheticReachEnv(max_steps=4), client=client, timeout_s=60)
        local_env = SpatialRewardWrapper(SyntheticReachEnv(max_steps=4), estimator=shipped)
        for seed in (11, 12):  # two episodes, two different targets
            _, ros_info = ros_env.reset(seed=seed)
            _, local_info = local_env.reset(seed=seed)
            assert ros_info["spatial"]["target"] == local_info["spatial"]["target"]
            assert ros_info["spatial"]["distance_m"] == pytest.approx(local_info["spatial"]["distance_m"])
            for action in ACTIONS[:4]:
                _, ros_reward, _, _, ros_step = ros_env.step(action)
                _, local_reward, _, _, _ = local_env.step(action)
                assert ros_step["spatial"]["status"] == "rewarded", ros_step["spatial"]
                assert ros_reward == pytest.approx(local_reward, abs=1e-6)
        assert client.get_reward(ros_step["spatial"]["stamp_ns"], 0).info["target"] == ros_info["spatial"]["target"]
        # a target given to the wrapper is set on the node at the first reset, whatever the node had
        named = SpatialRewardWrapper(SyntheticReachEnv(max_steps=1), client=client, target_object="the blue cube")
        _, named_info = named.reset(seed=11)
        assert client.get_reward(named_info["spatial"]["stamp_ns"], 0).info["target"] == "the blue cube"
    finally:
        client.close()
        if rclpy.ok():
            rclpy.shutdown()
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out


# ------------------------------------------------------------------ the bench, briefly

@pytest.mark.slow
def test_rl_reach_bench_runs_short(tmp_path):
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, str(ROOT_BENCH), "--steps", "120", "--eval-every", "60",
                           "--eval-episodes", "2", "--learning-starts", "40", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 120 steps teach nothing: 1 is expected
    for words in ("oracle", "spatial", "sparse", "Spearman", "spatial / oracle success rate"):
        assert words in proc.stdout, proc.stdout
    assert out.stat().st_size > 10_000

"""reward_node over real rclpy topics, services and parameters.

Most tests drive the node with a scripted estimator that answers through the real parsing path, so a
test can choose each frame's number, a refusal or a slow answer. The shipped tiny spatial model gives
real numbers about the synthetic scenes in process and end to end (the console scripts as separate
processes); the tiny random checkpoint checks loading and wiring.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from ros_helpers import VENV_BIN, Probe, Spinner, start_process, wait_for
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from spatialvlm_ros.reward_node import RewardNode
from spatialvlm_ros.spatial.estimator import Estimate, combine_answers


class ScriptedEstimator:
    """Stands in for the model: answers in words, the distance written in the frame's first pixel.

    Red value v -> "about v cm"; v == 0 -> a refusal (no number); v == 255 -> a slow answer that
    keeps the model busy until the test sets ``release`` (or 10 s pass).
    The text goes through the real combine_answers/parse_distance path.
    """

    backend = "scripted"
    model_name = "scripted-test-estimator"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False
        self.release = threading.Event()

    def estimate(self, items, samples: int = 1) -> list[Estimate]:
        self.calls += 1
        out = []
        for frame, query in items:
            value = int(frame.rgb[0, 0, 0])
            if value == 255:
                self.release.wait(10.0)
                value = 50
            text = "I cannot tell from this image." if value == 0 else f"It is about {value} cm away."
            out.append(combine_answers(query, [text] * samples))
        return out

    def close(self) -> None:
        self.closed = True


def frame_with(value: int, h: int = 48, w: int = 64) -> np.ndarray:
    rgb = np.full((h, w, 3), 90, np.uint8)
    rgb[0, 0, 0] = value
    return rgb




@pytest.fixture
def harness(ros, request):
    """A RewardNode with a scripted estimator, a probe node, both spinning."""
    overrides = getattr(request, "param", {})
    estimator = ScriptedEstimator()
    node = RewardNode(estimator=estimator, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    probe = Probe()
    spinner = Spinner(node, probe)
    if overrides.get("image_transport", "raw") == "raw":
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="reward node subscribed")
    wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
    yield node, probe, estimator
    estimator.release.set()  # never leave the worker blocked in the scripted slow answer
    spinner.stop()
    node.close()
    node.destroy_node()
    probe.destroy_node()


def send_and_wait(probe: Probe, value: int, sec: int, timeout: float = 10.0) -> dict:
    probe.send_rgb(frame_with(value), sec)
    wait_for(lambda: probe.info_for(sec) is not None, timeout, f"reward_info for stamp {sec}")
    return probe.info_for(sec)


def call(node: rclpy.node.Node, client, request, timeout: float = 5.0):
    wait_for(lambda: client.service_is_ready(), what="service ready")
    future = client.call_async(request)
    wait_for(future.done, timeout, "service response")
    return future.result()


def test_rewards_carry_source_stamp_and_negative_distance(harness):
    node, probe, _ = harness
    for sec, cm in ((101, 40), (102, 30), (103, 25)):
        info = send_and_wait(probe, cm, sec)
        assert info["stamp"] == {"sec": sec, "nanosec": 0}
        assert info["frame_id"] == "cam"
        assert info["distance_m"] == pytest.approx(cm / 100)
        assert info["reward"] == pytest.approx(-cm / 100)
        assert info["raw_answers"] == [f"It is about {cm} cm away."]
        assert info["error"] is None
        assert info["target"] == "the orange tea bottle"
        assert info["latency_ms"] >= 0
    wait_for(lambda: len(probe.rewards) >= 3, what="three rewards")
    assert probe.rewards[:3] == pytest.approx([-0.40, -0.30, -0.25])


@pytest.mark.parametrize("harness", [{"reward.mode": "progress", "reward.scale": 2.0}], indirect=True)
def test_progress_mode_and_reset(harness):
    node, probe, _ = harness
    assert send_and_wait(probe, 50, 201)["reward"] == 0.0  # first frame of the episode
    assert send_and_wait(probe, 40, 202)["reward"] == pytest.approx(2.0 * 0.10)
    assert send_and_wait(probe, 45, 203)["reward"] == pytest.approx(-2.0 * 0.05)
    client = probe.create_client(Trigger, "reset")
    response = call(probe, client, Trigger.Request())
    assert response.success and "episode 1" in response.message
    info = send_and_wait(probe, 20, 204)
    assert info["reward"] == 0.0 and info["episode"] == 1


@pytest.mark.parametrize("harness", [{"reward.success_distance_m": 0.1, "reward.success_bonus": 5.0}],
                         indirect=True)
def test_success_bonus(harness):
    _, probe, _ = harness
    far, near = send_and_wait(probe, 30, 301), send_and_wait(probe, 10, 302)
    assert far["success"] is False and far["reward"] == pytest.approx(-0.30)
    assert near["success"] is True and near["reward"] == pytest.approx(-0.10 + 5.0)


def test_target_change_at_run_time_and_refusals(harness):
    node, probe, _ = harness
    result = node.set_parameters([Parameter("target_object", value="the red cup")])[0]
    assert result.successful
    info = send_and_wait(probe, 30, 401)
    assert info["target"] == "the red cup" and "the red cup" in info["question"]
    for name, value, words in (
        ("target_object", "   ", "must not be empty"),
        ("reward.mode", "bogus", "accepted: negative_distance, progress"),
        ("samples_per_frame", 0, ""),
        ("question_template", "How far is {robot}?", "accepted: {gripper}, {target}"),
        ("question_template", "How far is {gripper}?", "must contain {target}"),
    ):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, (name, value)
        assert words in result.reason
    assert node.params["target_object"] == "the red cup"
    assert node.params["reward.mode"] == "negative_distance"
    # read-only: the model is chosen at start-up
    result = node.set_parameters([Parameter("model.name_or_path", value="other/model")])[0]
    assert not result.successful


def test_bad_frames_are_skipped_with_a_reason_and_the_node_goes_on(harness):
    node, probe, _ = harness
    good = frame_with(30)
    bad_messages = {
        501: Image(height=48, width=64, encoding="yuv422", step=128, data=bytes(128 * 48)),
        502: Image(height=48, width=64, encoding="rgb8", step=100, data=bytes(100 * 48)),  # step < width*3
        503: Image(height=0, width=0, encoding="rgb8", step=0, data=b""),  # empty
        504: Image(height=48, width=64, encoding="rgb8", step=192, data=bytes(1000)),  # size mismatch
    }
    for sec, msg in bad_messages.items():
        msg.header.stamp.sec = sec
        probe.image_pub.publish(msg)
        wait_for(lambda sec=sec: probe.info_for(sec) is not None, what=f"reason for bad frame {sec}")
    reasons = {sec: probe.info_for(sec)["error"] for sec in bad_messages}
    assert "unsupported encoding 'yuv422'" in reasons[501]
    assert "step" in reasons[502]
    assert "empty" in reasons[503]
    assert "bytes" in reasons[504]
    assert all(probe.info_for(sec)["reward"] is None for sec in bad_messages)
    # an answer with no number: reason given, no reward
    info = send_and_wait(probe, 0, 505)
    assert info["distance_m"] is None and "no distance" in info["error"]
    rewards_before = len(probe.rewards)
    probe.send_rgb(good, 506)
    wait_for(lambda: probe.info_for(506) is not None, what="good frame after bad ones")
    assert probe.info_for(506)["distance_m"] == pytest.approx(0.30)
    wait_for(lambda: len(probe.rewards) == rewards_before + 1, what="one more reward")
    assert node.camera.bad == 4


@pytest.mark.parametrize("harness", [{"image_transport": "compressed"}], indirect=True)
def test_compressed_transport_and_undecodable_data(harness):
    import cv2

    node, probe, _ = harness
    pub = probe.create_publisher(CompressedImage, "image/compressed", 5)
    wait_for(lambda: pub.get_subscription_count() > 0, what="compressed subscription")
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame_with(35), cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="png", data=png.tobytes())
    msg.header.stamp.sec = 601
    pub.publish(msg)
    # one at a time: the camera subscription keeps only the newest message (depth 1)
    wait_for(lambda: probe.info_for(601), what="the png frame's answer")
    garbage = CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg")
    garbage.header.stamp.sec = 602
    pub.publish(garbage)
    wait_for(lambda: probe.info_for(602), what="the garbage frame's reason")
    assert probe.info_for(601)["distance_m"] == pytest.approx(0.35)  # png is lossless
    assert probe.info_for(602)["reward"] is None and "decode" in probe.info_for(602)["error"]


def test_reset_answers_while_the_model_is_busy(harness):
    node, probe, estimator = harness
    probe.send_rgb(frame_with(255), 701)  # the scripted model stays busy on this one until released
    wait_for(lambda: node._worker.busy.is_set(), what="model busy")
    client = probe.create_client(Trigger, "reset")
    started = time.monotonic()
    response = call(probe, client, Trigger.Request(), timeout=1.0)
    assert response.success
    assert time.monotonic() - started < 1.0
    assert node._worker.busy.is_set(), "the slow frame should still be running"
    estimator.release.set()
    wait_for(lambda: probe.info_for(701) is not None, 10, "the slow answer")


def test_newest_frame_wins_and_drops_are_counted(harness):
    node, probe, estimator = harness
    probe.send_rgb(frame_with(255), 801)  # occupies the worker until released
    wait_for(lambda: node._worker.busy.is_set(), what="model busy")
    for sec in range(802, 812):
        probe.send_rgb(frame_with(20), sec)
        time.sleep(0.02)
    wait_for(lambda: (item := node._slot.peek()) is not None and item.header.stamp.sec == 811,
             what="the newest frame waiting in the slot")
    estimator.release.set()
    wait_for(lambda: probe.info_for(811) is not None, 15, "the newest frame's answer")
    measured = {i["stamp"]["sec"] for i in probe.infos if i["status"] != "dropped"}
    assert 811 in measured
    assert not measured & set(range(802, 811)), "older frames must be dropped, not queued"
    # ... and each dropped frame is still answered, saying so (issue 14: no frame vanishes)
    dropped = {i["stamp"]["sec"] for i in probe.infos if i["status"] == "dropped"}
    assert dropped <= set(range(802, 811)) and len(dropped) >= 8
    assert probe.info_for(811)["frames_dropped"] >= 8


def test_an_answer_overtaken_by_a_newer_frames_is_not_rewarded(ros):
    """Two frames in flight (an estimator that keeps two requests in flight, as the remote backend with
    model.max_in_flight 2 does): frame 901's answer is slow and frame 902's comes back first and is
    rewarded. 901's late answer must not move the progress baseline back in time: reward_info says
    "overtaken", with the answer but no reward, and the reward topic never carries it."""
    estimator = ScriptedEstimator()
    estimator.max_in_flight = 2
    node = RewardNode(estimator=estimator)
    probe = Probe()
    spinner = Spinner(node, probe)
    try:
        assert len(node._workers) == 2
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="reward node subscribed")
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
        probe.send_rgb(frame_with(255), 901)  # held by one worker until released
        wait_for(lambda: sum(w.busy.is_set() for w in node._workers) == 1, what="one worker busy")
        second = send_and_wait(probe, 40, 902)
        assert second["status"] == "rewarded" and second["reward"] == pytest.approx(-0.40), second
        estimator.release.set()
        wait_for(lambda: probe.info_for(901) is not None, 15, "the slow answer")
        first = probe.info_for(901)
        assert first["status"] == "overtaken" and first["reward"] is None and first["distance_m"] is None, first
        assert "newer frame was answered first" in first["error"] and "50 cm" in first["raw_answers"][0], first
        third = send_and_wait(probe, 30, 903)  # the baseline is still 902's: later frames are rewarded
        assert third["status"] == "rewarded", third
        # one publisher, one topic: rewards arrive in order, so an extra reward for 901 would show here
        wait_for(lambda: len(probe.rewards) >= 2, what="two rewards")
        time.sleep(0.2)
        assert probe.rewards == pytest.approx([-0.40, -0.30]), probe.rewards
    finally:
        estimator.release.set()
        spinner.stop()
        node.close()
        node.destroy_node()
        probe.destroy_node()


def test_diagnostics(harness):
    from diagnostic_msgs.msg import DiagnosticArray

    node, probe, _ = harness
    got: list[DiagnosticArray] = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    send_and_wait(probe, 30, 901)
    wait_for(lambda: any(dict((kv.key, kv.value) for kv in s.values).get("frames_processed") == "1"
                         for d in got for s in d.status), 5, "diagnostics after one frame")
    values = {kv.key: kv.value for kv in got[-1].status[0].values}
    assert {"reward_rate_hz", "median_latency_ms", "frames_dropped", "frames_bad"} <= set(values)


@contextlib.contextmanager
def node_with_model(probe_name: str, parameters: dict):
    """A RewardNode that loads its model from ``parameters`` (no injected estimator) and a probe, both
    spinning and matched; yields the probe, and frees the node's model afterwards."""
    node = RewardNode(parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
    probe = Probe(probe_name)
    spinner = Spinner(node, probe)
    try:
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="subscribed")
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
        yield probe
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        probe.destroy_node()


def test_real_tiny_checkpoint_in_process(ros, tiny_qwen_dir):
    """The real estimator path with random weights: from_pretrained, chat template, generate, parse;
    its words are noise, so either a number happened to be said or the reason is given."""
    with node_with_model("tiny_probe", {"model.name_or_path": str(tiny_qwen_dir), "model.max_new_tokens": 6,
                                        "samples_per_frame": 2}) as probe:
        probe.send_rgb(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8), 1001)
        wait_for(lambda: probe.info_for(1001) is not None, 30, "an answer from the tiny model")
        info = probe.info_for(1001)
        assert info["backend"] == "vlm" and info["model"] == str(tiny_qwen_dir)
        assert len(info["raw_answers"]) == 2 and len(info["sample_distances_m"]) == 2
        assert (info["distance_m"] is None) == (info["error"] is not None)


def test_shipped_model_in_process_rewards_follow_the_true_distance(ros):
    """The shipped tiny spatial model through the node's default question: frames of the demo
    approach get distances within [0.5x, 2x] of the truth, the reward is their negative, and the
    nearer frame gets the higher reward."""
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    scene = ApproachScene(frames=8)
    with node_with_model("shipped_probe", {"model.name_or_path": "builtin:tiny-spatial",
                                           "model.max_new_tokens": 16,
                                           "target_object": scene.target_description}) as probe:
        infos = []
        for sec, index in ((2001, 0), (2002, 7)):  # the start (0.6 m) and the end (0.1 m) of the approach
            frame = scene.render(index)
            probe.send_rgb(frame.rgb, sec)
            wait_for(lambda sec=sec: probe.info_for(sec) is not None, 30, f"the answer for frame {index}")
            info = probe.info_for(sec)
            assert info["model"] == "builtin:tiny-spatial" and info["error"] is None, info
            assert 0.5 <= info["distance_m"] / frame.true_distance_m <= 2.0, (info, frame.true_distance_m)
            assert info["reward"] == pytest.approx(-info["distance_m"])
            infos.append(info)
        assert infos[1]["reward"] > infos[0]["reward"]


# ------------------------------------------------------------------ the executables, as users start them

def _run_node_and_demo_camera(model: str, max_new_tokens: int) -> tuple[str, str]:
    """reward_node and the demo camera as separate processes, 640x480 rgb8 at 30 Hz best-effort;
    returns (the camera's stdout, the node's output after SIGINT)."""
    node = start_process([str(VENV_BIN / "reward_node"), "--ros-args",
                          "-p", f"model.name_or_path:={model}", "-p", f"model.max_new_tokens:={max_new_tokens}",
                          "-p", "target_object:=the orange cylinder"])
    try:
        camera = subprocess.run(
            [str(VENV_BIN / "spatialvlm_demo_camera"), "--frames", "60", "--rate", "30",
             "--best-effort", "--wait-s", "20", "--startup-timeout-s", "120"],
            capture_output=True, text=True, timeout=240)
        assert camera.returncode == 0, camera.stdout + camera.stderr
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out
    assert "ready: backend=vlm" in out
    return camera.stdout, out


def _summary(stdout: str) -> tuple[int, int, float | None]:
    """(answers matched to a sent frame, answers with a distance, Spearman against the truth or None)."""
    summary = [line for line in stdout.splitlines() if line.startswith("summary:")][0]
    parts = summary.split(",")
    rho = float(parts[3].split()[1]) if len(parts) > 3 and "Spearman" in parts[3] else None
    return int(parts[1].split()[0]), int(parts[2].split()[0]), rho


@pytest.mark.slow
def test_console_script_end_to_end_30hz():
    """The executables as users start them, with the demo's model (the shipped tiny spatial model):
    answers arrive for frames that were sent (matched by stamp), every one carries a distance, the
    distances rank the frames as the true distances do, and SIGINT ends the node cleanly."""
    stdout, _ = _run_node_and_demo_camera("builtin:tiny-spatial", 16)
    matched, with_distance, rho = _summary(stdout)
    assert matched >= 5, stdout
    assert with_distance == matched, stdout
    assert rho is not None and rho >= 0.9, stdout


@pytest.mark.slow
@pytest.mark.parametrize("model, words", [
    ("/does/not/exist", "is not an existing directory"),
    ("nobody/not-a-cached-model", "hf download nobody/not-a-cached-model"),
    ("nobody/not-a-cached-model", "builtin:tiny-spatial is shipped in it"),
])
def test_missing_model_says_what_to_do(model, words):
    proc = start_process([str(VENV_BIN / "reward_node"), "--ros-args", "-p", f"model.name_or_path:={model}"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert words in out


@pytest.mark.slow
def test_invalid_parameter_at_start_up():
    proc = start_process([str(VENV_BIN / "reward_node"), "--ros-args", "-p", "reward.mode:=fastest"])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "accepted: negative_distance, progress" in out


def test_close_frees_the_estimator(harness):
    node, _, estimator = harness
    node.close()
    assert estimator.closed
    assert not any(t.name == "reward-worker" and t.is_alive() for t in threading.enumerate())

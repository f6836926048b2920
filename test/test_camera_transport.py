"""The camera inputs over real topics: reliable subscriptions when every publisher is reliable, a warning
when the camera's frames are lost in transport, and the demo camera finding a remapped node.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import VENV_BIN, Probe, Spinner, node_env, wait_for
from sensor_msgs.msg import Image
from test_geometric_node import WordsEstimator

from spatialvlm_ros.camera_input import QOS_CHECK_PERIOD_S
from spatialvlm_ros.reward_node import RewardNode


def _image_subscription_reliability(node: Node, topic: str) -> list[ReliabilityPolicy]:
    return [info.qos_profile.reliability for info in node.get_subscriptions_info_by_topic(topic)]


def test_inputs_follow_the_publishers_reliability(ros):
    node = RewardNode(estimator=WordsEstimator("about 40 cm"), parameter_overrides=[Parameter("diagnostics_period_s", value=0.2)])
    reliable = Probe("transport_reliable_camera", reliable=True)
    spinner = Spinner(node, reliable)
    best_effort = None
    try:
        wait_for(lambda: reliable.image_pub.get_subscription_count() > 0, what="subscribed")
        wait_for(lambda: node.camera.reliable["image"], 5 + 2 * QOS_CHECK_PERIOD_S,
                 "a reliable subscription for a reliable camera")
        wait_for(lambda: ReliabilityPolicy.RELIABLE in _image_subscription_reliability(reliable, "/image"),
                 what="the graph to show it")
        # frames keep flowing across the switch, each taken once
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="reward_info matched")
        for sec in (51, 52, 53):
            reliable.send_rgb(np.full((24, 32, 3), 80, np.uint8), sec)
            wait_for(lambda sec=sec: reliable.info_for(sec) is not None, 10, f"reward_info {sec}")
        assert [i["stamp"]["sec"] for i in reliable.infos].count(52) == 1
        # a best-effort publisher appears: back to best-effort, which matches both
        best_effort = Node("transport_best_effort_camera")
        best_effort.create_publisher(Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        spinner.add(best_effort)
        wait_for(lambda: not node.camera.reliable["image"], 5 + 2 * QOS_CHECK_PERIOD_S, "back to best-effort")
        wait_for(lambda: _image_subscription_reliability(reliable, "/image") == [ReliabilityPolicy.BEST_EFFORT],
                 10, "only the best-effort subscription left")
    finally:
        spinner.stop()
        node.close()
        for n in (node, reliable, best_effort):
            if n is not None:
                n.destroy_node()


def test_frames_lost_in_transport_are_reported(ros):
    from spatialvlm_ros.spatial.imaging import rgb_to_image_fields

    node = RewardNode(estimator=WordsEstimator("about 40 cm"), parameter_overrides=[Parameter("diagnostics_period_s", value=0.2)])
    camera = Probe("transport_lossy_camera")
    statuses: list = []
    camera.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 50)
    spinner = Spinner(node, camera)
    try:
        wait_for(lambda: camera.image_pub.get_subscription_count() > 0, what="subscribed")
        # A 30 Hz camera (so its stamps say) of which about a third of the frames get through, at random
        # (stamps cannot tell a perfectly regular loss from a slower camera).
        kept = np.flatnonzero(np.random.default_rng(4).random(120) < 1 / 3)
        for n, i in enumerate(int(k) for k in kept):
            msg = Image(**rgb_to_image_fields(np.full((24, 32, 3), 80, np.uint8), "rgb8"))
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(1_000_000_000 + i * 33_333_333, 1_000_000_000)
            camera.image_pub.publish(msg)
            wait_for(lambda n=n: node.camera.received > n, 5, f"frame {n}")
        def final(status) -> bool:  # a status published after the last frame arrived
            return {kv.key: kv.value for kv in status.values}.get("frames_received") == str(len(kept))

        wait_for(lambda: any(final(s) for s in list(statuses)), 10, "the diagnostic after the last frame")
        status = next(s for s in list(statuses) if final(s))
        assert "lost in transport" in status.message
        values = {kv.key: kv.value for kv in status.values}
        assert float(values["camera_rate_hz"]) == pytest.approx(30.0, rel=0.01)
        window = kept[-60:]  # the monitor judges the last 60 arrivals
        lost = 1 - len(window) / (window[-1] - window[0] + 1)
        assert values["frames_lost_in_transport"] == f"{lost:.0%}" and lost > 0.5
        assert status.level != 0  # not OK
        assert "Fast DDS profile" in status.message
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        camera.destroy_node()


@pytest.mark.slow
def test_demo_camera_finds_a_remapped_reward_node(ros):
    """The issue's case: the node's image is remapped (as a launch file does); the demo camera, remapped
    alike, must see it and play, not wait out its start-up timeout."""
    remap = ["--ros-args", "-r", "image:=/cam/color/image_raw", "-r", "depth:=/cam/depth",
             "-r", "camera_info:=/cam/color/camera_info"]
    node = RewardNode(estimator=WordsEstimator("about 40 cm"), cli_args=remap)
    spinner = Spinner(node)
    try:
        camera = subprocess.run([str(VENV_BIN / "spatialvlm_demo_camera"), "--frames", "3", "--rate", "5",
                                 "--wait-s", "10", "--startup-timeout-s", "30", *remap],
                                capture_output=True, text=True, timeout=120, env=node_env())
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
    assert camera.returncode == 0, camera.stdout + camera.stderr
    assert "summary: sent 3 frames, 3 measured by the model" in camera.stdout, camera.stdout

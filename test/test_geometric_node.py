"""The geometric backend in the nodes, over real rclpy topics: image + depth + camera_info in, distances out.

The detector is SceneTruthDetector, a DETECTOR STAND-IN returning the synthetic scene's true boxes (no
real detector weights exist here). In the end-to-end reward test it is injected in-process by replacing
``vision_models.HFDetector`` (monkeypatch), so the node builds its estimator from its own parameters
(``model.backend: geometric``, ``model.depth_source: topic``) through shared_estimator/build_estimator;
everything after the boxes (depth decoding, intrinsics from camera_info, lifting, measuring, shaping) is
the real code. The cross_check tests hand both estimators to the nodes directly.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from geometry_helpers import SceneTruthDetector, within
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import Spinner, wait_for
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, String
from std_srvs.srv import Trigger

from spatialvlm_ros.affordance_node import AffordanceNode
from spatialvlm_ros.reward_node import RewardNode
from spatialvlm_ros.spatial.estimator import Estimate, ModelConfig, combine_answers
from spatialvlm_ros.spatial.geometric import GeometricEstimator
from spatialvlm_ros.spatial.imaging import rgb_to_image_fields
from spatialvlm_ros.spatial.synth.geometry_truth import object_truth, random_camera, random_visible_scene

GRIPPER = "the robot gripper"


class RgbdCamera(Node):
    """Plays an RGB-D camera (colour, aligned depth, camera_info) and an RL loop (reward_info, reward)."""

    def __init__(self) -> None:
        super().__init__("test_rgbd_camera")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.depth_pub = self.create_publisher(Image, "depth", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.infos: list[dict] = []
        self.rewards: list[float] = []
        self.answers: list[dict] = []
        self._lock = threading.Lock()
        self.create_subscription(String, "reward_info", self._on_info, 50)
        self.create_subscription(Float32, "reward", lambda m: self.rewards.append(m.data), 50)
        self.create_subscription(String, "affordance/answer", lambda m: self.answers.append(json.loads(m.data)), 50)

    def _on_info(self, msg: String) -> None:
        with self._lock:
            self.infos.append(json.loads(msg.data))

    def info_for(self, sec: int) -> dict | None:
        with self._lock:
            return next((i for i in self.infos if i["stamp"]["sec"] == sec), None)

    def send(self, node: Node, result, sec: int, encoding: str = "16UC1") -> None:
        """camera_info and depth first (the node pairs an image with the newest of each), then the image."""
        camera = result.camera
        info = CameraInfo(width=camera.width, height=camera.height, k=camera.k_matrix(), p=camera.p_matrix(),
                          distortion_model="plumb_bob", d=[0.0] * 5)
        depth = Image(**result.depth_fields(encoding))
        image = Image(**rgb_to_image_fields(result.rgb, "rgb8"))
        for msg in (info, depth, image):
            msg.header.stamp.sec = sec
            msg.header.frame_id = "camera_color_optical_frame"
        self.info_pub.publish(info)
        self.depth_pub.publish(depth)
        wait_for(lambda: (d := node.camera._depth.newest()) is not None and d.header.stamp.sec == sec
                 and (c := node.camera._camera_info.newest()) is not None and c.header.stamp.sec == sec,
                 what=f"the node to hold depth and camera_info {sec}")
        self.image_pub.publish(image)

    def wait_subscribed(self) -> None:
        for pub in (self.image_pub, self.depth_pub, self.info_pub):
            wait_for(lambda pub=pub: pub.get_subscription_count() > 0, what=f"{pub.topic_name} subscribed")


class WordsEstimator:
    """Stands in for a VLM in cross_check: always answers the same words, read by the real parser."""

    backend = "vlm"
    model_name = "words-stand-in"

    def __init__(self, words: str) -> None:
        self.words = words
        self.closed = False

    def estimate(self, items, samples: int = 1) -> list[Estimate]:
        return [combine_answers(query, [self.words] * samples) for _, query in items]

    def close(self) -> None:
        self.closed = True




@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(99)
    return [random_visible_scene(rng, (2, 3), gripper=True, camera=random_camera(rng, 320, 240),
                                 gripper_distance=(0.15, 0.45)) for _ in range(3)]


def _run(node: Node, camera: RgbdCamera):
    spinner = Spinner(node, camera)
    camera.wait_subscribed()
    return spinner


def test_reward_node_with_geometric_backend_and_depth_topic_matches_ground_truth(ros, scenes, monkeypatch):
    from spatialvlm_ros.spatial import vision_models

    detector = SceneTruthDetector()
    monkeypatch.setattr(vision_models, "HFDetector", lambda *args, **kwargs: detector)
    targets = [sc.objects[0].description for sc, _ in scenes]
    node = RewardNode(parameter_overrides=[
        Parameter("model.backend", value="geometric"),
        Parameter("model.depth_source", value="topic"),
        Parameter("gripper_description", value=GRIPPER),
        Parameter("target_object", value=targets[0]),
    ])
    camera = RgbdCamera()
    spinner = _run(node, camera)
    try:
        assert node.estimator.backend == "geometric" and detector.name in node.estimator.model_name
        for sec, ((scene, result), target) in enumerate(zip(scenes, targets, strict=True), start=1):
            if target != node.params["target_object"]:
                assert node.set_parameters([Parameter("target_object", value=target)])[0].successful
            detector.register(result)
            camera.send(node, result, sec, encoding="16UC1" if sec % 2 else "32FC1")
            wait_for(lambda sec=sec: camera.info_for(sec) is not None, 15.0, f"reward_info {sec}")
            info = camera.info_for(sec)
            truth = float(np.linalg.norm(object_truth(scene, GRIPPER).centre - scene.find(target).centre))
            assert info["error"] is None, info["error"]
            assert within(info["distance_m"], truth), (info["distance_m"], truth)
            assert info["reward"] == pytest.approx(-info["distance_m"])
            assert info["backend"] == "geometric" and info["target"] == target
            assert info["details"]["depth_source"] == "topic" and info["details"]["intrinsics"] == "camera_info"
            assert "cross_check" not in info
        wait_for(lambda: len(camera.rewards) == len(scenes), what="one reward per frame")
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        camera.destroy_node()
    assert detector.closed  # the last user closed the shared estimator


def test_reward_node_cross_check_reports_both_backends_and_rewards_the_configured_one(ros, scenes):
    scene, result = scenes[0]
    target = scene.objects[0].description
    detector = SceneTruthDetector()
    detector.register(result)
    geometric = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)
    vlm = WordsEstimator("It is about 50 cm away.")
    node = RewardNode(estimator=geometric, cross_check_estimator=vlm, parameter_overrides=[
        Parameter("cross_check", value=True), Parameter("gripper_description", value=GRIPPER),
        Parameter("target_object", value=target)])
    camera = RgbdCamera()
    spinner = _run(node, camera)
    try:
        camera.send(node, result, 7)
        wait_for(lambda: camera.info_for(7) is not None, 15.0, "reward_info")
        info = camera.info_for(7)
        truth = float(np.linalg.norm(object_truth(scene, GRIPPER).centre - scene.find(target).centre))
        assert within(info["distance_m"], truth) and info["reward"] == pytest.approx(-info["distance_m"])
        check = info["cross_check"]
        assert check["backend"] == "vlm" and check["model"] == "words-stand-in"
        assert check["distance_m"] == pytest.approx(0.5) and check["error"] is None
        assert check["ratio"] == pytest.approx(info["raw_distance_m"] / 0.5, abs=1e-3)
        assert check["raw_answers"] == ["It is about 50 cm away."]
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        camera.destroy_node()
    assert vlm.closed and detector.closed


def test_affordance_node_cross_check_measures_the_gap_both_ways(ros, scenes):
    scene, result = scenes[0]
    a, b = scene.objects[0].description, scene.objects[1].description
    detector = SceneTruthDetector()
    detector.register(result)
    geometric = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)
    vlm = WordsEstimator("The gap is about 20 cm wide.")
    node = AffordanceNode(estimator=geometric, cross_check_estimator=vlm, parameter_overrides=[
        Parameter("cross_check", value=True), Parameter("gap.object_a", value=a),
        Parameter("gap.object_b", value=b), Parameter("robot_width_m", value=0.05),
        Parameter("safety_margin_m", value=0.0)])
    camera = RgbdCamera()
    spinner = _run(node, camera)
    try:
        camera.send(node, result, 3)
        wait_for(lambda: (f := node.newest_frame()) is not None and f.header.stamp.sec == 3, what="frame 3")
        client = camera.create_client(Trigger, "check_gap")
        wait_for(client.service_is_ready, what="check_gap")
        future = client.call_async(Trigger.Request())
        wait_for(future.done, 15.0, "check_gap")
        answer = json.loads(future.result().message)
        truth = scene.gap(a, b).width_m
        assert within(answer["gap_width_m"], truth), (answer["gap_width_m"], truth)
        assert answer["consistent"] is True and answer["backend"] == "geometric"
        assert answer["fits"] == (truth > 0.05)
        check = answer["cross_check"]
        assert check["backend"] == "vlm" and check["gap_width_m"] == pytest.approx(0.2)
        assert check["ratio"] == pytest.approx(answer["gap_width_m"] / 0.2, abs=1e-3)
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        camera.destroy_node()


def test_reward_node_uses_only_depth_stamped_like_its_frame(ros, scenes, monkeypatch):
    """Real topics: depth after the image (used), a stalled, a mis-stamped and a late depth stream
    (not used, and reward_info's warning says why). With model.depth_source topic a frame without its
    own depth gets no distance, so a stale depth that slipped through would show as a number."""
    scene, result = scenes[0]
    target = scene.objects[0].description
    detector = SceneTruthDetector()
    detector.register(result)
    geometric = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)
    node = RewardNode(estimator=geometric, parameter_overrides=[
        Parameter("gripper_description", value=GRIPPER), Parameter("target_object", value=target),
        Parameter("sync.slop_s", value=0.01), Parameter("sync.max_age_s", value=1.0)])
    camera = RgbdCamera()
    spinner = _run(node, camera)
    camera_model = result.camera
    info = CameraInfo(width=camera_model.width, height=camera_model.height, k=camera_model.k_matrix(),
                      p=camera_model.p_matrix(), distortion_model="plumb_bob", d=[0.0] * 5)
    depth = Image(**result.depth_fields("16UC1"))
    image = Image(**rgb_to_image_fields(result.rgb, "rgb8"))

    def publish(pub, msg, sec: int, nanosec: int = 0) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        pub.publish(msg)

    def answer(sec: int) -> dict:
        wait_for(lambda: camera.info_for(sec) is not None, 20.0, f"reward_info {sec}")
        return camera.info_for(sec)

    truth = float(np.linalg.norm(object_truth(scene, GRIPPER).centre - scene.find(target).centre))
    try:
        # The streams are running (a frame waits only for a stream that is publishing) ...
        publish(camera.info_pub, info, 9)
        publish(camera.depth_pub, depth, 9)
        wait_for(lambda: len(node.camera._depth) and len(node.camera._camera_info), what="streams seen")
        # 1. ... matched: camera_info first, the image, then its depth (arrival order does not matter).
        publish(camera.info_pub, info, 10)
        publish(camera.image_pub, image, 10)
        publish(camera.depth_pub, depth, 10)
        first = answer(10)
        assert within(first["distance_m"], truth) and "warning" not in first, first
        # 2. Stalled: the depth stream stops; 1.5 s later (> sync.max_age_s) a new frame arrives.
        time.sleep(1.5)
        publish(camera.info_pub, info, 11)
        # After a pause of every stream, camera_info is itself stale until its next message arrives,
        # and callbacks of two topics run in no fixed order: let camera_info 11 land first, so that
        # only depth is the stalled stream here.
        wait_for(lambda: node.camera._camera_info.newest().header.stamp.sec == 11, what="camera_info 11")
        publish(camera.image_pub, image, 11)
        stalled = answer(11)
        assert stalled["distance_m"] is None and stalled["reward"] is None
        assert stalled["warning"].startswith("depth stalled: the newest depth arrived"), stalled
        # 3. Mis-stamped: depth arrives with the frame but stamped 0.5 s off.
        publish(camera.info_pub, info, 12)
        publish(camera.depth_pub, depth, 11, 500_000_000)
        publish(camera.image_pub, image, 12)
        mis = answer(12)
        assert mis["distance_m"] is None
        assert "no depth stamped within sync.slop_s (0.01 s) of this frame (nearest stamp 0.500 s away)" \
            in mis["warning"], mis
        # 4. Late: a live depth stream behind the colour one (depth of frame 11 arrives with frame 13);
        # frame 13 waits sync.max_age_s for its own depth, which comes only after that.
        publish(camera.depth_pub, depth, 11)
        publish(camera.info_pub, info, 13)
        publish(camera.image_pub, image, 13)
        late = answer(13)
        publish(camera.depth_pub, depth, 13)
        # (under load the old depth may itself arrive late, and the stream then reads as stalled: either
        # way the frame's own depth was not there and nothing else was used)
        assert late["distance_m"] is None and "depth not used" in late["warning"], late
        # camera_info is matched the same way: a frame without its own gets none (and says so)
        publish(camera.depth_pub, depth, 14)
        publish(camera.image_pub, image, 14)
        no_info = answer(14)
        assert "camera_info" in no_info["warning"] and "camera_info not used" in no_info["warning"], no_info
        assert "depth" not in no_info["warning"].replace("camera_info", "")  # its depth matched
        assert no_info["details"]["intrinsics"] != "camera_info", no_info["details"]
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        camera.destroy_node()

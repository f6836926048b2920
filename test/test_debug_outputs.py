"""debug_image and markers from the nodes over real topics: nothing is drawn while nobody subscribes; with a
subscriber, the frame the model saw (at its size) with the answer, and the 3D boxes and measured segment
in the camera frame, stamped like the source image.

The geometric backend is the real GeometricEstimator on synthetic RGB-D scenes with SceneTruthDetector, a
DETECTOR STAND-IN returning the true boxes and masks (no real detector weights exist here).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from geometry_helpers import SceneTruthDetector
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import Probe, Spinner, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import String
from test_geometric_node import GRIPPER, RgbdCamera, WordsEstimator
from visualization_msgs.msg import Marker, MarkerArray

from spatialvlm_ros.affordance_node import AffordanceNode
from spatialvlm_ros.reward_node import RewardNode
from spatialvlm_ros.spatial.estimator import ModelConfig
from spatialvlm_ros.spatial.geometric import GeometricEstimator
from spatialvlm_ros.spatial.imaging import rgb_from_image_msg
from spatialvlm_ros.spatial.synth.geometry_truth import random_camera, random_visible_scene


class Viewer(Node):
    """Plays RViz / rqt_image_view: subscribes debug_image and markers."""

    def __init__(self, node_name: str = "spatialvlm_reward") -> None:
        super().__init__(f"test_debug_viewer_{node_name}")
        self.images: list[Image] = []
        self.markers: list[MarkerArray] = []
        self._lock = threading.Lock()
        self.create_subscription(Image, f"/{node_name}/debug_image", self._keep(self.images), 10)
        self.create_subscription(MarkerArray, f"/{node_name}/markers", self._keep(self.markers), 10)

    def _keep(self, into: list):
        def keep(msg) -> None:
            with self._lock:
                into.append(msg)
        return keep

    def image_for(self, sec: int) -> Image | None:
        with self._lock:
            return next((m for m in self.images if m.header.stamp.sec == sec), None)

    def markers_for(self, sec: int) -> MarkerArray | None:
        with self._lock:
            return next((m for m in self.markers if m.markers and m.markers[0].header.stamp.sec == sec), None)




@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(8)
    return random_visible_scene(rng, (2, 3), gripper=True, camera=random_camera(rng, 320, 240),
                                gripper_distance=(0.2, 0.4))


def _geometric(detector: SceneTruthDetector) -> GeometricEstimator:
    return GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)


def test_reward_node_debug_outputs_only_while_subscribed(ros, scene):
    sc, result = scene
    detector = SceneTruthDetector(masks=True)
    detector.register(result)
    node = RewardNode(estimator=_geometric(detector), parameter_overrides=[
        Parameter("gripper_description", value=GRIPPER), Parameter("target_object", value=sc.objects[0].description)])
    camera = RgbdCamera()
    spinner = Spinner(node, camera)
    viewer = None
    try:
        camera.wait_subscribed()
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="reward_info matched")
        camera.send(node, result, 1)
        wait_for(lambda: camera.info_for(1) is not None, 15, "reward_info 1")
        assert camera.info_for(1)["error"] is None
        assert node.debug.published == 0  # nobody subscribed: nothing drawn

        viewer = Viewer()
        spinner.add(viewer)
        wait_for(lambda: node.debug.wanted(), what="the viewer's subscriptions")
        wait_for(lambda: node.debug.marker_pub.get_subscription_count() > 0, what="markers subscribed")
        camera.send(node, result, 2)
        wait_for(lambda: viewer.image_for(2) is not None and viewer.markers_for(2) is not None, 15,
                 "debug image and markers for frame 2")
        info = camera.info_for(2)
        image = viewer.image_for(2)
        assert image.header.frame_id == "camera_color_optical_frame"
        assert (image.width, image.height, image.encoding) == (320, 240, "rgb8")  # the full frame
        drawn = rgb_from_image_msg(image)
        assert not np.array_equal(drawn, result.rgb)
        markers = viewer.markers_for(2).markers
        assert markers[0].action == Marker.DELETEALL
        assert all(m.header.frame_id == "camera_color_optical_frame" and m.header.stamp.sec == 2 for m in markers)
        cubes = [m for m in markers if m.type == Marker.CUBE]
        objects = info["details"]["objects"]
        assert [(c.pose.position.x, c.pose.position.y, c.pose.position.z) for c in cubes] == \
            [pytest.approx(tuple(objects[k]["centre_m"])) for k in ("a", "b")]
        (line,) = [m for m in markers if m.type == Marker.LINE_LIST]
        length = np.linalg.norm([line.points[0].x - line.points[1].x, line.points[0].y - line.points[1].y,
                                 line.points[0].z - line.points[1].z])
        assert length == pytest.approx(info["raw_distance_m"], abs=1e-3)
        texts = [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING]
        assert any(t.startswith("about") for t in texts)
    finally:
        spinner.stop()
        node.close()
        for n in (node, camera, viewer):
            if n is not None:
                n.destroy_node()


def test_vlm_debug_image_is_the_downscaled_frame_and_markers_are_cleared(ros):
    node = RewardNode(estimator=WordsEstimator("about 40 cm"), parameter_overrides=[Parameter("model.max_image_pixels", value=19200)])
    probe = Probe("debug_vlm_probe")
    viewer = Viewer()
    spinner = Spinner(node, probe, viewer)
    try:
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="subscribed")
        wait_for(lambda: node.debug.image_pub.get_subscription_count() > 0
                 and node.debug.marker_pub.get_subscription_count() > 0, what="viewer subscribed")
        probe.send_rgb(np.full((240, 320, 3), 120, np.uint8), 11, frame_id="cam")
        wait_for(lambda: viewer.image_for(11) is not None and viewer.markers_for(11) is not None, 15, "debug outputs")
        image = viewer.image_for(11)
        assert (image.width, image.height) == (160, 120)  # 320x240 shrunk to 19200 px, as the VLM saw it
        assert image.header.frame_id == "cam"
        assert [m.action for m in viewer.markers_for(11).markers] == [Marker.DELETEALL]  # nothing in 3D
    finally:
        spinner.stop()
        node.close()
        for n in (node, probe, viewer):
            n.destroy_node()


def test_affordance_node_debug_image_for_a_gap(ros, scene):
    sc, result = scene
    detector = SceneTruthDetector(masks=True)
    detector.register(result)
    a, b = sc.objects[0].description, sc.objects[1].description
    node = AffordanceNode(estimator=_geometric(detector))
    camera = RgbdCamera()
    viewer = Viewer("spatialvlm_affordance")
    spinner = Spinner(node, camera, viewer)
    try:
        camera.wait_subscribed()
        wait_for(lambda: node.debug.image_pub.get_subscription_count() > 0
                 and node.debug.marker_pub.get_subscription_count() > 0, what="viewer subscribed")
        query_pub = camera.create_publisher(String, "affordance/query", 10)
        wait_for(lambda: query_pub.get_subscription_count() > 0, what="query subscription")
        camera.send(node, result, 21)
        wait_for(lambda: node.newest_frame() is not None, what="a frame")
        query_pub.publish(String(data=json.dumps({"id": "g1", "object_a": a, "object_b": b, "robot_width_m": 0.05})))
        wait_for(lambda: any(x.get("id") == "g1" for x in camera.answers), 15, "the answer")
        answer = next(x for x in camera.answers if x.get("id") == "g1")
        assert answer["gap_width_m"] is not None, answer
        wait_for(lambda: viewer.image_for(21) is not None and viewer.markers_for(21) is not None, 15, "debug")
        (line,) = [m for m in viewer.markers_for(21).markers if m.type == Marker.LINE_LIST]
        length = np.linalg.norm([line.points[0].x - line.points[1].x, line.points[0].y - line.points[1].y,
                                 line.points[0].z - line.points[1].z])
        assert length == pytest.approx(answer["steps"][0]["value_m"], abs=1e-3)
    finally:
        spinner.stop()
        node.close()
        for n in (node, camera, viewer):
            n.destroy_node()

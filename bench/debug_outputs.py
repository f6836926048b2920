"""What debug_image and markers cost a model node, with and without someone watching.

reward_node's per-frame work (``RewardNode._process``: the estimator, reward shaping, reward_info, and the
debug hook) is timed on the same frames three ways in one process:
  (a) nobody subscribes debug_image or markers (the hook only counts subscribers): the baseline;
  (b) a viewer subscribes both: the frame is drawn and the markers built and published;
  (c) the hook alone while nobody subscribes (``DebugOutputs.wanted()``), in microseconds.
The estimator is the geometric backend on synthetic 640x480 RGB-D scenes with a DETECTOR STAND-IN that
returns the true boxes and masks (no detector weights exist offline), so (a) is the cheapest real
per-frame work; with a VLM the model's seconds dwarf the drawing. ``--backend vlm`` uses a stand-in VLM
that answers instantly (drawing at the VLM's input size, text only), the worst case for the ratio.

    .venv/bin/python bench/debug_outputs.py                 # 40 frames per mode, ~30 s
    .venv/bin/python bench/debug_outputs.py --frames 100 --backend vlm
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="spatialvlm_bench_"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from geometry_helpers import SceneTruthDetector, frame_from  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_geometric_node import WordsEstimator  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from spatialvlm_ros.camera_input import CameraFrame  # noqa: E402
from spatialvlm_ros.reward_node import RewardNode  # noqa: E402
from spatialvlm_ros.spatial.estimator import ModelConfig  # noqa: E402
from spatialvlm_ros.spatial.geometric import GeometricEstimator  # noqa: E402
from spatialvlm_ros.spatial.synth.geometry_truth import random_camera, random_visible_scene  # noqa: E402

GRIPPER = "the robot gripper"


def _items(scenes, n: int) -> list[tuple[str, CameraFrame]]:
    """(the target, the frame): each scene's first object, so every frame is measured."""
    out = []
    for i in range(n):
        scene, result = scenes[i % len(scenes)]
        header = Header(frame_id="camera_color_optical_frame")
        header.stamp.sec = i + 1
        out.append((scene.objects[0].description, CameraFrame(frame_from(result), header, time.monotonic())))
    return out


def _time_process(node: RewardNode, items: list[tuple[str, CameraFrame]]) -> list[float]:
    times = []
    for target, item in items:
        if node.params["target_object"] != target:
            node.set_parameters([Parameter("target_object", value=target)])
        start = time.perf_counter()
        node._process(item)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames timed per mode")
    parser.add_argument("--backend", choices=("geometric", "vlm"), default="geometric")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    scenes = [random_visible_scene(rng, (2, 3), gripper=True, camera=random_camera(rng, 640, 480),
                                   gripper_distance=(0.2, 0.4)) for _ in range(4)]
    detector = SceneTruthDetector(masks=True)
    for _, result in scenes:
        detector.register(result)
    rclpy.init()
    if args.backend == "geometric":
        estimator = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)
    else:
        estimator = WordsEstimator("about 42 cm")  # a VLM stand-in that answers at once
    node = RewardNode(estimator=estimator, parameter_overrides=[Parameter("gripper_description", value=GRIPPER)])
    node.stop_work()  # no camera or worker: _process is called directly on the prepared frames
    from spatialvlm_ros.debug_output import debug_outputs_for

    node.debug = debug_outputs_for(node, estimator, node.params.values)
    items = _items(scenes, args.frames)
    _time_process(node, items[:3])  # warm-up

    without = _time_process(node, items)
    assert node.debug.published == 0
    start = time.perf_counter()
    for _ in range(1000):
        node.debug.wanted()
    hook_us = (time.perf_counter() - start) * 1e3

    viewer = Node("bench_debug_viewer")
    got = {"images": 0, "markers": 0}
    depth = args.frames  # the viewer is spun after the timing: keep every message until then
    viewer.create_subscription(Image, "/spatialvlm_reward/debug_image", lambda _m: got.__setitem__("images", got["images"] + 1), depth)
    viewer.create_subscription(MarkerArray, "/spatialvlm_reward/markers", lambda _m: got.__setitem__("markers", got["markers"] + 1),
                               depth)
    deadline = time.monotonic() + 10
    while not (node.debug.image_pub.get_subscription_count() and node.debug.marker_pub.get_subscription_count()):
        if time.monotonic() > deadline:
            print("the viewer never matched", file=sys.stderr)
            return 2
        time.sleep(0.01)
    with_viewer = _time_process(node, items)
    drawn = node.debug.published
    end = time.monotonic() + 5
    while (got["images"] < args.frames or got["markers"] < args.frames) and time.monotonic() < end:
        rclpy.spin_once(viewer, timeout_sec=0.05)

    a, b = statistics.median(without), statistics.median(with_viewer)
    print(f"backend {args.backend} ({estimator.model_name}), 640x480 frames, {args.frames} per mode "
          f"(os.cpu_count()={os.cpu_count()})")
    print(f"(a) nobody watching:     median {a:7.2f} ms per frame   (p90 {np.percentile(without, 90):.2f})")
    print(f"(b) a viewer subscribed: median {b:7.2f} ms per frame   (p90 {np.percentile(with_viewer, 90):.2f}); "
          f"{drawn} drawn, the viewer received {got['images']} images and {got['markers']} marker arrays")
    print(f"(c) the hook while nobody watches: {hook_us:.1f} us per frame "
          f"({hook_us / 1e3 / a:.2%} of (a))")
    print(f"ratio (b)/(a): {b / a:.2f}x   drawing + publishing: {b - a:+.2f} ms per frame")
    if node._last_error:
        print(f"a frame was not measured: {node._last_error}", file=sys.stderr)
        return 1
    viewer.destroy_node()
    node.close()
    node.destroy_node()
    rclpy.shutdown()
    return 0 if drawn == args.frames else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""spatialvlm_demo_camera: a synthetic camera that plays a gripper approach and prints what the reward node says.

It publishes ``image`` (rgb8), ``depth`` (16UC1) and ``camera_info`` at a fixed rate, listens to
``reward_info``, and prints one line per answer next to the true distance of the frame it refers to.
Used by the README demo and by the end-to-end tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene


class DemoCamera(Node):
    def __init__(self, rate_hz: float, frames: int, reliable: bool) -> None:
        super().__init__("spatialvlm_demo_camera")
        self.scene = ApproachScene(frames=frames)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.depth_pub = self.create_publisher(Image, "depth", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.reward_info_sub = self.create_subscription(String, "reward_info", self._on_reward_info, 50)
        self.sent: dict[tuple[int, int], tuple[int, float]] = {}  # stamp -> (index, true distance)
        self.answers: list[dict] = []
        self.index = 0
        self.frames = frames
        self.last_answer_time = time.monotonic()
        self.period_s = 1.0 / rate_hz

    def play(self) -> None:
        """Start publishing (the timer is made here so no frame goes out before the node listens)."""
        self.create_timer(self.period_s, self._tick)

    def _tick(self) -> None:
        if self.index >= self.frames:
            return
        frame = self.scene.render(self.index)
        stamp = self.get_clock().now().to_msg()
        header_kwargs = {"stamp": stamp, "frame_id": "demo_camera_optical"}
        image = Image(**rgb_to_image_fields(frame.rgb, "rgb8"))
        depth = Image(**metres_to_depth_fields(frame.depth_m, "16UC1"))
        k = self.scene.intrinsics
        info = CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=[k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
                          p=[k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        for msg in (image, depth, info):
            msg.header.stamp = header_kwargs["stamp"]
            msg.header.frame_id = header_kwargs["frame_id"]
        self.sent[(stamp.sec, stamp.nanosec)] = (self.index, frame.true_distance_m)
        self.depth_pub.publish(depth)
        self.info_pub.publish(info)
        self.image_pub.publish(image)
        self.index += 1

    def reward_info_matched(self) -> int:
        return self.reward_info_sub.get_publisher_count()

    def _on_reward_info(self, msg: String) -> None:
        info = json.loads(msg.data)
        key = (info["stamp"]["sec"], info["stamp"]["nanosec"])
        index, truth = self.sent.get(key, (None, None))
        info["_frame_index"], info["_true_distance_m"] = index, truth
        self.answers.append(info)
        self.last_answer_time = time.monotonic()
        if info["distance_m"] is None:
            print(f"frame {index!s:>3}  true {truth:.2f} m  -> no reward: {info['error']}", flush=True)
        else:
            print(f"frame {index!s:>3}  true {truth:.2f} m  -> distance {info['distance_m']:.2f} m  "
                  f"reward {info['reward']:+.3f}  (answer {info['raw_answers'][:1]!r}, "
                  f"{info['latency_ms']:.0f} ms)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames in the approach")
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second")
    parser.add_argument("--wait-s", type=float, default=60.0,
                        help="give up this long after the last frame if answers are missing")
    parser.add_argument("--best-effort", action="store_true", help="publish best-effort like many cameras")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = DemoCamera(args.rate, args.frames, not args.best_effort)
    try:
        # Play only once the reward node is up and matched: frames sent before then are lost.
        while rclpy.ok() and (node.count_publishers("reward_info") == 0
                              or node.count_subscribers("image") == 0
                              or node.reward_info_matched() == 0):
            rclpy.spin_once(node, timeout_sec=0.1)
        node.play()
        deadline = None
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
            if node.index >= node.frames and deadline is None:
                deadline = time.monotonic() + args.wait_s
            matched = sum(1 for a in node.answers if a["_frame_index"] is not None)
            if deadline is not None and (time.monotonic() > deadline or matched >= node.frames):
                break
            if deadline is not None and node.answers and time.monotonic() - node.last_answer_time > 5:
                break  # no answer for 5 s after the last frame: the node has caught up
    except KeyboardInterrupt:
        pass
    answered = [a for a in node.answers if a["_frame_index"] is not None]
    rewarded = [a for a in answered if a["distance_m"] is not None]
    print(f"summary: sent {node.index} frames, {len(answered)} answers matched a sent frame by stamp, "
          f"{len(rewarded)} carried a distance", flush=True)
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())

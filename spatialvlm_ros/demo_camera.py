"""spatialvlm_demo_camera: a synthetic camera that plays a gripper approach and prints what the reward node says.

It renders the package's synthetic tabletop scene (``spatial.synth``: the gripper approaching the orange
cylinder among other cubes and cylinders, the scenes the shipped tiny model was trained on), publishes
``image`` (rgb8), ``depth`` (16UC1) and ``camera_info`` at a fixed rate, listens to ``reward_info``, and
prints one line per answer next to the true distance of the frame it refers to. The summary line ends
with the Spearman correlation of the published distances with the true ones (when there are at least
3). The reward node's ``target_object`` should be ``the orange cylinder``
(``ApproachScene.target_description``).
With ``--ask "Can a 0.6 m wide robot pass between ... and ...?"`` it then puts that question to the
affordance node (``affordance/query``, JSON with an id) and prints the answer with the same id.
Used by the README demo and by the end-to-end tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
from spatialvlm_ros.spatial.metrics import spearman
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
        self._publish(self.index)
        self.index += 1

    def _publish(self, index: int) -> None:
        frame = self.scene.render(index)
        stamp = self.get_clock().now().to_msg()
        header_kwargs = {"stamp": stamp, "frame_id": "demo_camera_optical"}
        image = Image(**rgb_to_image_fields(frame.rgb, "rgb8"))
        depth = Image(**metres_to_depth_fields(frame.depth_m, "16UC1"))
        k = self.scene.intrinsics
        info = CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=self.scene.camera.k_matrix(), p=self.scene.camera.p_matrix())
        for msg in (image, depth, info):
            msg.header.stamp = header_kwargs["stamp"]
            msg.header.frame_id = header_kwargs["frame_id"]
        self.sent[(stamp.sec, stamp.nanosec)] = (index, frame.true_distance_m)
        self.depth_pub.publish(depth)
        self.info_pub.publish(info)
        self.image_pub.publish(image)

    def ask(self, question: str, wait_s: float) -> dict | None:
        """Put ``question`` to the affordance node; its answer (same id), or None after ``wait_s``.

        The camera keeps streaming its last view meanwhile, so the node answers on a fresh frame.
        """
        request_id = f"demo-{os.getpid()}"
        answers: list[dict] = []

        def on_answer(msg: String) -> None:
            try:
                answers.append(json.loads(msg.data))
            except ValueError:
                pass

        query_pub = self.create_publisher(String, "affordance/query", 10)
        answer_sub = self.create_subscription(String, "affordance/answer", on_answer, 10)
        deadline = time.monotonic() + wait_s
        while rclpy.ok() and time.monotonic() < deadline and (
                query_pub.get_subscription_count() == 0 or answer_sub.get_publisher_count() == 0):
            rclpy.spin_once(self, timeout_sec=0.1)
        if query_pub.get_subscription_count() == 0:
            print("ask: no affordance node is listening on affordance/query", flush=True)
            return None
        last = max(self.frames - 1, 0)
        self._publish(last)
        next_frame_s = time.monotonic() + self.period_s
        asked = False
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.02)
            if time.monotonic() >= next_frame_s:
                self._publish(last)
                next_frame_s += self.period_s
                if not asked:  # one frame period after the first re-sent frame: the node has it
                    print(f"ask: {question}", flush=True)
                    query_pub.publish(String(data=json.dumps({"id": request_id, "question": question})))
                    asked = True
            for answer in answers:
                if answer.get("id") == request_id:
                    return answer
        return None

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
    parser.add_argument("--startup-timeout-s", type=float, default=300.0,
                        help="give up when no reward node appears within this long (model loading included)")
    parser.add_argument("--best-effort", action="store_true", help="publish best-effort like many cameras")
    parser.add_argument("--ask", metavar="QUESTION", default="",
                        help="after the approach, ask the affordance node this gap question and print "
                             "its answer (waits up to --wait-s)")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = DemoCamera(args.rate, args.frames, not args.best_effort)
    try:
        # Play only once the reward node is up and matched: frames sent before then are lost.
        give_up = time.monotonic() + args.startup_timeout_s
        while rclpy.ok() and (node.count_publishers("reward_info") == 0
                              or node.count_subscribers("image") == 0
                              or node.reward_info_matched() == 0):
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > give_up:
                print(f"no reward node subscribed to 'image' and publishing 'reward_info' within "
                      f"{args.startup_timeout_s:.0f} s: is reward_node running in this ROS_DOMAIN_ID "
                      "(and did its model load)?", flush=True)
                node.destroy_node()
                rclpy.try_shutdown()
                return 1
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
    correlation = ""
    if len(rewarded) >= 3:
        rho = spearman([a["distance_m"] for a in rewarded], [a["_true_distance_m"] for a in rewarded])
        correlation = f", Spearman {rho:.3f} between published and true distances"
    print(f"summary: sent {node.index} frames, {len(answered)} answers matched a sent frame by stamp, "
          f"{len(rewarded)} carried a distance{correlation}", flush=True)
    asked_ok = True
    if args.ask and rclpy.ok():
        try:
            reply = node.ask(args.ask, args.wait_s)
        except KeyboardInterrupt:
            reply = None
        asked_ok = reply is not None
        if reply is None:
            print(f"answer: none within {args.wait_s:g} s", flush=True)
        else:
            print(f"answer: {reply['answer']}  (gap_width_m={reply['gap_width_m']}, "
                  f"clearance_m={reply['clearance_m']}, fits={reply['fits']}, "
                  f"latency {reply['latency_ms']:.0f} ms)", flush=True)
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    return 0 if answered and asked_ok else 1


if __name__ == "__main__":
    sys.exit(main())

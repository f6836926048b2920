"""spatialvlm_demo_camera: a synthetic camera that plays a gripper approach and prints what the reward node says.

It renders the package's synthetic tabletop scene (``spatial.synth``: the gripper approaching the orange
cylinder among other cubes and cylinders, the scenes the shipped tiny model was trained on), publishes
``image`` (rgb8), ``depth`` (16UC1) and ``camera_info`` at a fixed rate, gets each frame's ``reward_info``
through ``spatialvlm_ros.client.RewardClient``, and prints one line per frame next to its true distance
(frames the node dropped for a newer one say so). The summary line gives the Spearman correlation of the
published distances with the true ones (when there are at least 3). The reward node's ``target_object`` should be ``the orange cylinder``
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
from collections import deque

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from spatialvlm_ros.client import RewardClient, RewardResult
from spatialvlm_ros.spatial.imaging import metres_to_depth_fields
from spatialvlm_ros.spatial.metrics import spearman
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene


class DemoCamera(Node):
    """Publishes depth and camera_info itself; the colour image goes out through a RewardClient with the
    same stamp, and the client hands back each frame's reward_info (no stamp matching here)."""

    def __init__(self, rate_hz: float, frames: int, reliable: bool) -> None:
        super().__init__("spatialvlm_demo_camera")
        self.scene = ApproachScene(frames=frames)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.client = RewardClient(node_name="spatialvlm_demo_camera_rewards", image_qos=qos)
        self.depth_pub = self.create_publisher(Image, "depth", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.sent: list[tuple[int, int, float]] = []  # (stamp ns, index, true distance)
        self.results: list[tuple[int, float, RewardResult]] = []  # (index, true distance, answer)
        self.frames = frames
        self.period_s = 1.0 / rate_hz

    def _publish(self, index: int) -> int:
        frame = self.scene.render(index)
        stamp = self.get_clock().now().to_msg()
        depth = Image(**metres_to_depth_fields(frame.depth_m, "16UC1"))
        k = self.scene.intrinsics
        info = CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=self.scene.camera.k_matrix(), p=self.scene.camera.p_matrix())
        for msg in (depth, info):
            msg.header.stamp = stamp
            msg.header.frame_id = "demo_camera_optical"
        self.depth_pub.publish(depth)
        self.info_pub.publish(info)
        key = self.client.publish_image(frame.rgb, frame_id="demo_camera_optical", stamp=stamp)
        self.sent.append((key, index, frame.true_distance_m))
        return key

    def play(self, wait_s: float) -> None:
        """Publish the approach at the camera rate, printing answers as they come, then wait for the rest."""
        pending: deque[tuple[int, int, float]] = deque()
        next_t = time.monotonic()
        for index in range(self.frames):
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += self.period_s
            self._publish(index)
            pending.append(self.sent[-1])
            while pending and (result := self.client.get_reward(pending[0][0], timeout_s=0)).status != "timeout":
                self._report(*pending.popleft()[1:], result)
        if pending:
            # The node answers frames in the order they came: once the last one is answered, a frame still
            # missing never reached it (a best-effort link) and will not be answered.
            self.client.get_reward(pending[-1][0], timeout_s=wait_s)
        while pending:
            key, index, truth = pending.popleft()
            self._report(index, truth, self.client.get_reward(key, timeout_s=0.5))

    def _report(self, index: int, truth: float, result: RewardResult) -> None:
        self.results.append((index, truth, result))
        if result.ok:
            info = result.info
            print(f"frame {index:>3}  true {truth:.2f} m  -> distance {info['distance_m']:.2f} m  "
                  f"reward {info['reward']:+.3f}  (answer {info['raw_answers'][:1]!r}, "
                  f"{info['latency_ms']:.0f} ms)", flush=True)
        else:
            print(f"frame {index:>3}  true {truth:.2f} m  -> no reward ({result.status}): {result.reason}",
                  flush=True)

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

    def close(self) -> None:
        self.client.close()
        self.destroy_node()


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
        # Play only once the reward node is up and matched: frames sent before then are lost. The
        # counts are the endpoints' own, so they follow remapping (-r image:=/camera/color/image_raw).
        give_up = time.monotonic() + args.startup_timeout_s
        if not node.client.wait_for_node(args.startup_timeout_s):
            print(f"no reward node subscribed to {node.client.image_pub.topic_name} and publishing "
                  f"{node.client.info_sub.topic_name} within {args.startup_timeout_s:.0f} s: is reward_node "
                  "running in this ROS_DOMAIN_ID, did its model load, and do the topics match (a launch "
                  "file remaps the node's image to its image:= argument; remap this camera alike: "
                  "--ros-args -r image:=... -r depth:=... -r camera_info:=...)?", flush=True)
            node.close()
            rclpy.try_shutdown()
            return 1
        while node.depth_pub.get_subscription_count() == 0 and time.monotonic() < give_up:
            time.sleep(0.05)  # the node's depth subscription matches in the same discovery round
        node.play(args.wait_s)
    except KeyboardInterrupt:
        pass
    answered = [(i, t, r) for i, t, r in node.results if r.status != "timeout"]
    measured = [(i, t, r) for i, t, r in answered if r.status not in ("dropped", "refused")]
    rewarded = [(i, t, r) for i, t, r in measured if r.ok]
    correlation = ""
    if len(rewarded) >= 3:
        rho = spearman([r.distance_m for _, _, r in rewarded], [t for _, t, _ in rewarded])
        correlation = f", Spearman {rho:.3f} between published and true distances"
    print(f"summary: sent {len(node.sent)} frames, {len(measured)} measured by the model, "
          f"{len(rewarded)} carried a distance{correlation}; {len(answered) - len(measured)} dropped for a "
          f"newer frame, {len(node.results) - len(answered)} unanswered (lost on the way)", flush=True)
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
    node.close()
    if rclpy.ok():
        rclpy.shutdown()
    return 0 if measured and asked_ok else 1


if __name__ == "__main__":
    sys.exit(main())

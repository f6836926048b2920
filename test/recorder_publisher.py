"""Publishes a camera + depth + joint-state workload, numbered, for the recorder's tests and bench.

Run as its own process (it is the "robot"): waits until every topic has --subscribers
subscribers, then publishes unnumbered warm-up messages (header.frame_id "warmup") for --warmup-s
or, with --wait-go, until a line arrives on stdin. The warm-up exists because a DDS reader may
match a writer a moment after the writer matched it, and a volatile reader drops what was sent
before: a reader that received a warm-up message has matched. Then it publishes 640x480 rgb8
images, 16UC1 depth and camera_info at --image-hz and JointState at --joint-hz for --seconds,
numbered in header.frame_id, waits until reliable readers have acknowledged everything, and
writes a JSON report (per topic: count, header stamps in ns, and for images the sha1 of the pixel
bytes unless --no-hash).

    python test/recorder_publisher.py --seconds 3 --report /tmp/report.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState


def _qos(reliable: bool, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--image-hz", type=float, default=30.0)
    parser.add_argument("--joint-hz", type=float, default=100.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--best-effort", action="store_true", help="publish best-effort")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--report", help="write the JSON report here (default: stdout)")
    parser.add_argument("--no-hash", action="store_true", help="skip pixel sha1s (bench)")
    parser.add_argument("--subscribers", type=int, default=1, help="wait for this many per topic")
    parser.add_argument("--wait-go", action="store_true",
                        help="print READY, warm up until a line arrives on stdin")
    parser.add_argument("--warmup-s", type=float, default=0.0)
    parser.add_argument("--match-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    rclpy.init()
    node = Node("recorder_test_publisher", namespace=args.namespace or None)
    reliable = not args.best_effort
    n_frames = int(round(args.seconds * args.image_hz))
    n_joints = int(round(args.seconds * args.joint_hz))
    # Deep enough to cover the moment between the publisher seeing the recorder and the
    # recorder seeing the publisher (reliable repair resends from this history), ~3 s.
    frame_depth = max(1, min(n_frames, int(3 * args.image_hz)))
    joint_depth = max(1, min(n_joints, int(3 * args.joint_hz)))
    pubs = {
        "image": node.create_publisher(Image, "image", _qos(reliable, frame_depth)),
        "depth": node.create_publisher(Image, "depth", _qos(reliable, frame_depth)),
        "camera_info": node.create_publisher(CameraInfo, "camera_info",
                                             _qos(reliable, frame_depth)),
        "joint_states": node.create_publisher(JointState, "joint_states",
                                              _qos(reliable, joint_depth)),
    }
    deadline = time.monotonic() + args.match_timeout
    while any(p.get_subscription_count() < args.subscribers for p in pubs.values()):
        if time.monotonic() > deadline:
            missing = [n for n, p in pubs.items() if p.get_subscription_count() < args.subscribers]
            print(f"no subscriber on {missing} after {args.match_timeout} s", file=sys.stderr)
            return 3
        time.sleep(0.02)
    go = threading.Event()
    if args.wait_go:
        threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
        print("READY", flush=True)

    rng = np.random.default_rng(0)
    w, h = args.width, args.height
    rgb_base = rng.integers(0, 256, w * h * 3, np.uint8).tobytes()
    depth_base = rng.integers(300, 5000, w * h, np.uint16).astype("<u2").tobytes()
    report: dict[str, dict[str, list]] = {
        name: {"stamps": [], "data_sha1": []}
        for name in ("image", "depth", "camera_info", "joint_states")
    }
    image, depth, info, joints = Image(), Image(), CameraInfo(), JointState()
    image.height = depth.height = info.height = h
    image.width = depth.width = info.width = w
    image.encoding, image.step = "rgb8", w * 3
    depth.encoding, depth.step = "16UC1", w * 2
    info.distortion_model = "plumb_bob"
    info.k = [500.0, 0.0, w / 2, 0.0, 500.0, h / 2, 0.0, 0.0, 1.0]
    joints.name = [f"joint_{i}" for i in range(7)]
    image.data, depth.data = rgb_base, depth_base  # what warm-up messages carry

    def publish(name: str, msg, seq: int | None, pixels: bytes | None = None) -> None:
        msg.header.frame_id = "warmup" if seq is None else str(seq)
        stamp = node.get_clock().now()
        msg.header.stamp = stamp.to_msg()
        pubs[name].publish(msg)
        if seq is None:
            return
        report[name]["stamps"].append(stamp.nanoseconds)
        if pixels is not None and not args.no_hash:
            report[name]["data_sha1"].append(hashlib.sha1(pixels).hexdigest())

    warmup_end = time.monotonic() + args.warmup_s
    while (not go.is_set()) if args.wait_go else time.monotonic() < warmup_end:
        for name, msg in (("image", image), ("depth", depth), ("camera_info", info)):
            publish(name, msg, None)
        publish("joint_states", joints, None)
        time.sleep(1.0 / args.image_hz)
    print("PUBLISHING", flush=True)

    start = time.monotonic()
    frame_period, joint_period = 1.0 / args.image_hz, 1.0 / args.joint_hz
    frame_seq = joint_seq = 0
    while frame_seq < n_frames or joint_seq < n_joints:
        next_frame = start + frame_seq * frame_period if frame_seq < n_frames else float("inf")
        next_joint = start + joint_seq * joint_period if joint_seq < n_joints else float("inf")
        wait = min(next_frame, next_joint) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if next_frame <= next_joint:
            seq_bytes = frame_seq.to_bytes(8, "little")
            rgb = bytearray(rgb_base)
            rgb[:8] = seq_bytes
            image.data = rgb
            dep = bytearray(depth_base)
            dep[:8] = seq_bytes
            depth.data = dep
            publish("image", image, frame_seq, rgb)
            publish("depth", depth, frame_seq, dep)
            publish("camera_info", info, frame_seq)
            frame_seq += 1
        else:
            joints.position = [joint_seq * 0.001 + i for i in range(7)]
            joints.velocity = [0.1] * 7
            publish("joint_states", joints, joint_seq)
            joint_seq += 1
    elapsed = time.monotonic() - start
    acked = all(p.wait_for_all_acked(Duration(seconds=10)) for p in pubs.values())
    out = {
        "elapsed_s": elapsed,
        "acked": acked,
        "topics": {name: {"count": len(r["stamps"]), **r} for name, r in report.items()},
    }
    text = json.dumps(out)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    else:
        print(text)
    print("DONE", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

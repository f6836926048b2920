"""Helpers for tests that run real rclpy nodes: a spinning executor thread, waiting on conditions, frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from spatialvlm_ros.node_support import MultiThreadedExecutor
from spatialvlm_ros.spatial.imaging import rgb_to_image_fields

VENV_BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Spinner:
    """Spins nodes in a background thread on the executor the nodes' main() uses."""

    def __init__(self, *nodes: Node) -> None:
        self.executor = MultiThreadedExecutor(num_threads=4)
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def add(self, node: Node) -> None:
        self.executor.add_node(node)

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)


class Probe(Node):
    """Plays the camera and the RL loop: publishes images, collects reward and reward_info."""

    def __init__(self, name: str = "test_probe", reliable: bool = True) -> None:
        super().__init__(name)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.infos: list[dict] = []
        self.rewards: list[float] = []
        self._lock = threading.Lock()
        self.create_subscription(String, "reward_info", self._on_info, 50)
        from std_msgs.msg import Float32

        self.create_subscription(Float32, "reward", lambda m: self.rewards.append(m.data), 50)

    def _on_info(self, msg: String) -> None:
        with self._lock:
            self.infos.append(json.loads(msg.data))

    def send_rgb(self, rgb: np.ndarray, sec: int, frame_id: str = "cam", encoding: str = "rgb8") -> None:
        msg = Image(**rgb_to_image_fields(rgb, encoding))
        msg.header.stamp.sec = sec
        msg.header.frame_id = frame_id
        self.image_pub.publish(msg)

    def info_for(self, sec: int) -> dict | None:
        with self._lock:
            for info in self.infos:
                if info["stamp"]["sec"] == sec:
                    return info
        return None


def node_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def start_process(args: list[str], **popen_kwargs) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=node_env(), **popen_kwargs)

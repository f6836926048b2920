"""Plays rendered episodes into a real recorder_node: the data engine's "robot" for tests and the bench.

One process, a private rclpy context: a RecorderNode and a player node that publishes ``image`` (rgb8),
``depth`` (16UC1 millimetres, as RGB-D cameras send it) and ``camera_info`` reliably, sets the recorder's
``task`` and ``target_object`` parameters, and starts and stops each episode through the ``record``
service, as a user's launch file and RL loop would. What comes out is ordinary recorder_node episodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import SetBool

from spatialvlm_ros.recorder_node import RecorderNode
from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
from spatialvlm_ros.spatial.synth.domain import DomainEpisode

__all__ = ["record_episodes"]

TOPICS = ["image", "depth", "camera_info"]


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def _all_recorded(writer: Any, topics: list[str], n: int) -> bool:
    counts = writer.accepted_counts()
    return all(counts.get(t, 0) >= n for t in topics)


def record_episodes(episodes: Sequence[DomainEpisode], output_dir: Path | str, rate_hz: float = 15.0,
                    task: str = "look around the table", timeout_s: float = 60.0) -> list[Path]:
    """Record each episode through recorder_node; the episode directories, in order."""
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    recorder = RecorderNode(context=context, parameter_overrides=[
        Parameter("output_dir", value=str(output_dir)), Parameter("topics", value=TOPICS),
        Parameter("topic_discovery_period_s", value=0.1), Parameter("task", value=task)])
    player = Node("spatialvlm_episode_player", context=context)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"image": player.create_publisher(Image, "image", qos),
            "depth": player.create_publisher(Image, "depth", qos),
            "camera_info": player.create_publisher(CameraInfo, "camera_info", qos)}
    client = player.create_client(SetBool, "record")
    for node in (recorder, player):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    out: list[Path] = []
    try:
        _wait(lambda: not recorder.unrecorded_topics(), timeout_s, "recorder_node to subscribe")
        _wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), timeout_s, "the match")
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError("the record service never appeared")

        def call(start: bool) -> str:
            future = client.call_async(SetBool.Request(data=start))
            _wait(future.done, timeout_s, "the record service")
            response = future.result()
            if not response.success:
                raise RuntimeError(f"record {start}: {response.message}")
            return response.message

        stamp_ns = time.time_ns()
        for episode in episodes:
            recorder.set_parameters([Parameter("target_object", value=episode.target_object)])
            call(True)
            writer = recorder.episode
            for result in episode.frames:
                stamp_ns += int(1e9 / rate_hz)
                k = result.camera.intrinsics
                msgs = {"image": Image(**rgb_to_image_fields(result.rgb, "rgb8")),
                        "depth": Image(**metres_to_depth_fields(result.depth_m, "16UC1")),
                        "camera_info": CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob",
                                                  d=[0.0] * 5, k=result.camera.k_matrix(),
                                                  p=result.camera.p_matrix())}
                for name in ("camera_info", "depth", "image"):
                    msg = msgs[name]
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                    msg.header.frame_id = "camera_optical"
                    pubs[name].publish(msg)
                time.sleep(1.0 / rate_hz)
            if writer is None:
                raise RuntimeError("the record service answered but no episode is open")
            names = [recorder.resolve_topic_name(t) for t in TOPICS]
            _wait(partial(_all_recorded, writer, names, len(episode.frames)), timeout_s,
                  "every frame to be recorded")
            out.append(Path(call(False)))
    finally:
        executor.shutdown(timeout_sec=5.0)
        recorder.close()
        for node in (recorder, player):
            node.destroy_node()
        rclpy.shutdown(context=context)
        thread.join(timeout=5.0)
    return out

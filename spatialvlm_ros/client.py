"""A reward client for training code: "the reward of the frame I took at step t", or why it will not come.

A plain rclpy helper in the spirit of nav2_simple_commander: it owns a small node spun on its own thread,
publishes frames (or lets the caller publish them with its own stamps), keeps the ``reward_info`` answers
of ``reward_node`` in a bounded cache keyed by the source image stamp, and hands one out on request::

    client = RewardClient()                       # rclpy.init() is done for you if needed
    client.wait_for_node(timeout_s=60)
    client.reset()                                # a new episode on the node
    stamp = client.publish_image(rgb)             # or: your camera publishes, you know its stamp
    result = client.get_reward(stamp, timeout_s=10)
    if result.ok: use(result.reward)
    else: print(result.status, result.reason)     # dropped, refused, no_distance, estimator_error, timeout...
    client.close()

The node answers every frame it receives exactly once (``reward_info.status``), so a missing answer means
the frame never reached the node (lost on a best-effort link, or the node is not running): that is a
``timeout``. No stamp matching is needed in user code.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from spatialvlm_ros.spatial.imaging import rgb_to_image_fields

NS_PER_S = 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    """A stamp as integer nanoseconds, from an int, a (sec, nanosec) pair, a builtin_interfaces/Time,
    a std_msgs/Header, a message with a header, or a reward_info dict."""
    if isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool):
        return int(stamp)
    if isinstance(stamp, dict):
        stamp = stamp.get("stamp", stamp)
        return int(stamp["sec"]) * NS_PER_S + int(stamp["nanosec"])
    if isinstance(stamp, tuple) and len(stamp) == 2:
        return int(stamp[0]) * NS_PER_S + int(stamp[1])
    if hasattr(stamp, "header"):
        stamp = stamp.header
    if hasattr(stamp, "stamp"):
        stamp = stamp.stamp
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
    raise TypeError(f"not a stamp: {stamp!r} (give ns, (sec, nanosec), a Time, a Header or a message)")


@dataclass(frozen=True)
class RewardResult:
    """The node's answer for one frame, or why there is none.

    ``status`` is reward_info's (``rewarded``, ``no_distance``, ``estimator_error``, ``bad_frame``,
    ``dropped``, ``refused``, ``target_changed``, ``not_measured``) or ``timeout`` when no answer came.
    ``reward`` is a number only when ``status`` is ``rewarded``; ``reason`` says why otherwise.
    """

    stamp_ns: int
    info: dict[str, Any] | None
    status: str
    reason: str | None
    received_monotonic_s: float | None = None  # when the answer arrived (time.monotonic)
    received_ros_ns: int | None = None  # the same, on the client node's ROS clock

    @property
    def ok(self) -> bool:
        return self.status == "rewarded"

    @property
    def reward(self) -> float | None:
        return self.info["reward"] if self.ok and self.info is not None else None

    @property
    def distance_m(self) -> float | None:
        return self.info.get("distance_m") if self.info is not None else None


def _status_of(info: dict[str, Any]) -> str:
    if "status" in info:
        return str(info["status"])
    return "rewarded" if info.get("reward") is not None else "no_distance"  # a node from before `status`


class RewardClient:
    """Talks to one reward_node (under ``namespace``); see the module docstring.

    ``cache_size`` bounds the answers kept (oldest evicted first; ``evicted`` counts them): ask for a
    stamp's reward before that many newer frames have been answered. ``image_qos`` is the QoS of the
    ``image`` publisher (reliable, depth 10 by default: a simulator that waits should lose nothing).
    """

    def __init__(self, *, namespace: str = "", node_name: str = "spatialvlm_reward_client",
                 reward_node_name: str = "spatialvlm_reward", cache_size: int = 1024,
                 image_qos: QoSProfile | None = None) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._owns_init = not rclpy.ok()
        if self._owns_init:
            rclpy.init()
        self.node: Node = rclpy.create_node(node_name, namespace=namespace)
        self.cache_size = cache_size
        self.reward_node_name = reward_node_name  # for set_target (its parameter services)
        self._param_client: Any = None
        self.evicted = 0
        self._cond = threading.Condition()
        self._cache: OrderedDict[int, tuple[dict[str, Any], float, int]] = OrderedDict()
        self._last_stamp_ns = 0
        self.image_pub = self.node.create_publisher(
            Image, "image", image_qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.info_sub = self.node.create_subscription(String, "reward_info", self._on_info, 1000)
        self.reset_client = self.node.create_client(Trigger, "reset")
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="reward-client-spin", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ spin thread
    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - ends with the context's shutdown
            pass

    def _on_info(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
            key = stamp_ns(info)
        except (ValueError, KeyError, TypeError):
            return  # not a reward_info we understand; nothing to match
        received = (info, time.monotonic(), self.node.get_clock().now().nanoseconds)
        with self._cond:
            self._cache[key] = received
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
                self.evicted += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ the API
    def wait_for_node(self, timeout_s: float = 60.0) -> bool:
        """True once a reward_node subscribes ``image`` and publishes ``reward_info`` to this client."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.image_pub.get_subscription_count() > 0 and self.info_sub.get_publisher_count() > 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def publish_image(self, image: np.ndarray | Image, frame_id: str = "camera",
                      stamp: Any = None) -> int:
        """Publish a frame (an (H, W, 3) uint8 RGB array or a ready Image) on ``image``; returns its stamp in ns.

        Without ``stamp`` the client's clock stamps it, made strictly increasing so that no two frames
        share a stamp (the key of their answers).
        """
        if isinstance(image, np.ndarray):
            msg = Image(**rgb_to_image_fields(image, "rgb8"))
            msg.header.frame_id = frame_id
        else:
            msg = image
        if stamp is None:
            key = max(self.node.get_clock().now().nanoseconds, self._last_stamp_ns + 1)
        else:
            key = stamp_ns(stamp)
        self._last_stamp_ns = max(self._last_stamp_ns, key)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(key, NS_PER_S)
        self.image_pub.publish(msg)
        return key

    def get_reward(self, stamp: Any, timeout_s: float = 10.0) -> RewardResult:
        """The answer for the frame with ``stamp`` (waits up to ``timeout_s``); never raises on no answer."""
        key = stamp_ns(stamp)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while key not in self._cache:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return RewardResult(key, None, "timeout", self._timeout_reason(key, timeout_s))
                self._cond.wait(min(remaining, 0.2))
            info, received_mono, received_ros = self._cache[key]
        status = _status_of(info)
        reason = None if status == "rewarded" else (info.get("error") or status)
        return RewardResult(key, info, status, reason, received_mono, received_ros)

    def _timeout_reason(self, key: int, timeout_s: float) -> str:
        if self.info_sub.get_publisher_count() == 0:
            return (f"no reward_info within {timeout_s:g} s and no reward_node publishes reward_info "
                    f"to this client (is it running, in this ROS_DOMAIN_ID and namespace?)")
        why = (f"no reward_info for this stamp within {timeout_s:g} s: the frame did not reach the node "
               "(lost on a best-effort link?) or the node is still measuring earlier frames")
        if self.evicted and self._cache and key < next(iter(self._cache)):
            why += f"; or its answer was evicted from the client's cache (cache_size {self.cache_size})"
        return why

    def forget(self, stamp: Any) -> None:
        """Drop one answer from the cache (a training loop that has used it)."""
        with self._cond:
            self._cache.pop(stamp_ns(stamp), None)

    def reset(self, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Start a new episode on the node (its ``reset`` service); (success, message)."""
        if not self.reset_client.wait_for_service(timeout_sec=timeout_s):
            return False, f"the reset service is not available within {timeout_s:g} s"
        future = self.reset_client.call_async(Trigger.Request())
        if not self._wait_future(future, timeout_s):
            return False, f"no answer from the reset service within {timeout_s:g} s"
        response = future.result()
        return bool(response.success), str(response.message)

    def set_target(self, target_object: str, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Set the node's ``target_object`` (a new episode there); (success, reason when refused)."""
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        if self._param_client is None:
            self._param_client = AsyncParameterClient(self.node, self.reward_node_name)
        if not self._param_client.wait_for_services(timeout_sec=timeout_s):
            return False, f"the parameter services of {self.reward_node_name} are not available"
        future = self._param_client.set_parameters([Parameter("target_object", value=target_object)])
        if not self._wait_future(future, timeout_s):
            return False, f"no answer to setting target_object within {timeout_s:g} s"
        (result,) = future.result().results
        return bool(result.successful), str(result.reason)

    def _wait_future(self, future: Any, timeout_s: float) -> bool:
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            future.cancel()
            return False
        return True

    def close(self) -> None:
        """Stop spinning and destroy the node (and shut rclpy down if this client started it)."""
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        if self._owns_init and rclpy.ok():
            rclpy.shutdown()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Camera subscriptions shared by the nodes that look at frames: image (raw or compressed), camera_info, depth.

Decodes each colour frame in the callback (microseconds for rgb8) so bad input is reported at once and
never reaches the model. Depth and camera_info are kept by header stamp and joined to a frame by
``complete`` (on the worker, just before the model runs) with the same rule the annotator uses
(``spatial/stamp_sync.py``): a depth image stamped within ``sync.slop_s`` of the frame and arrived
within ``sync.max_age_s`` of it, or none, and the frame says why (``depth_error``).

Each input starts best-effort (it matches every publisher) and is re-subscribed reliably once every
publisher on it is reliable (the recorder's rule, node_support.matching_qos), so frames a camera sends
reliably are not lost to a best-effort reader; back to best-effort if a best-effort publisher appears.
Arrivals are compared with the camera's own stamps (spatial/arrivals.py) to tell frames lost in
transport from a camera that is slow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spatialvlm_ros.node_support import CAMERA_QOS, matching_qos
from spatialvlm_ros.spatial.arrivals import ArrivalMonitor, ArrivalReport
from spatialvlm_ros.spatial.estimator import Frame, intrinsics_from_camera_info
from spatialvlm_ros.spatial.imaging import (
    ImageDecodeError,
    metres_from_depth_msg,
    rgb_from_compressed_msg,
    rgb_from_image_msg,
)
from spatialvlm_ros.spatial.stamp_sync import StampedBuffer, SyncPolicy, aligned_depth


@dataclass
class CameraFrame:
    """A decoded frame with the header of the message it came from and when it arrived."""

    frame: Frame
    header: Any  # std_msgs/Header of the source image
    received_monotonic_s: float
    depth_error: str | None = None  # why depth / camera_info were not used (set by complete())
    received_ns: int = 0  # arrival by the node's clock (the clock depth arrivals are compared on)
    completed: bool = False


# How often the inputs' publishers are looked up to match their reliability.
QOS_CHECK_PERIOD_S = 1.0


def stamp_dict(header: Any) -> dict[str, int]:
    return {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)}


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def arrival_values(report: ArrivalReport | None) -> dict[str, str]:
    """The arrival report as diagnostics values (empty strings while too few frames have arrived)."""
    def fmt(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    if report is None:
        return {"frames_arrival_hz": "", "camera_rate_hz": "", "frames_lost_in_transport": ""}
    return {"frames_arrival_hz": fmt(report.arrival_hz, ".2f"), "camera_rate_hz": fmt(report.camera_hz, ".2f"),
            "frames_lost_in_transport": fmt(report.lost_share, ".0%")}


class CameraInput:
    """Subscribes ``image`` or ``image/compressed`` (+ ``camera_info``, ``depth``) on ``node``.

    ``on_frame(CameraFrame)`` gets each good frame; ``on_bad(header, reason)`` each frame that could
    not be decoded. Both run on the executor thread and must be quick. The consumer calls
    ``complete(frame)`` before using a frame: it joins the matching depth and intrinsics.
    """

    def __init__(
        self,
        node: Node,
        transport: str,
        on_frame: Callable[[CameraFrame], None],
        on_bad: Callable[[Any, str], None],
        callback_group: CallbackGroup | None = None,
        image_queue_depth: int = 1,
        sync: SyncPolicy | None = None,
    ) -> None:
        self._node = node
        self._on_frame = on_frame
        self._on_bad = on_bad
        self._clock = node.get_clock()
        self.sync = sync or SyncPolicy()
        self._lock = threading.Lock()  # one complete() at a time per frame
        # Kept for matching: at least as many as frames may wait for the worker (frame_policy every).
        history = max(64, image_queue_depth + 32)
        self._camera_info: StampedBuffer[CameraInfo] = StampedBuffer(history)
        self._depth: StampedBuffer[Image] = StampedBuffer(history)
        self.received = 0
        self.bad = 0
        self.arrivals = ArrivalMonitor()
        self._group = callback_group
        image = ("image/compressed", CompressedImage, self._on_compressed) if transport == "compressed" \
            else ("image", Image, self._on_image)
        # input name -> (type, callback); each is subscribed best-effort first (matches every publisher)
        self._inputs: dict[str, tuple[Any, Callable[[Any], None]]] = {
            image[0]: image[1:], "camera_info": (CameraInfo, self._on_camera_info),
            "depth": (Image, self._on_depth)}
        # Depth 1 for a camera (only the newest frame is used); deeper for frame_policy every, so that a
        # burst of simulator frames waits in DDS for the callback instead of being overwritten there.
        self._depths = {name: (image_queue_depth if name == image[0] else 1) for name in self._inputs}
        self._subscriptions: dict[str, Any] = {}
        self._reliable: dict[str, bool] = {}
        self._retired: list[Any] = []  # replaced subscriptions, destroyed on the next check
        self._recent_keys: deque[tuple[int, int, str]] = deque(maxlen=16)
        for name in self._inputs:
            self._subscribe(name, CAMERA_QOS if self._depths[name] == 1 else QoSProfile(
                depth=self._depths[name], reliability=CAMERA_QOS.reliability,
                durability=CAMERA_QOS.durability, history=CAMERA_QOS.history), reliable=False)
        self._timer = node.create_timer(QOS_CHECK_PERIOD_S, self.match_publishers, callback_group=callback_group)

    def _subscribe(self, name: str, qos: Any, reliable: bool) -> None:
        msg_type, callback = self._inputs[name]
        self._subscriptions[name] = self._node.create_subscription(msg_type, name, callback, qos,
                                                                   callback_group=self._group)
        self._reliable[name] = reliable

    def match_publishers(self) -> None:
        """Re-subscribe each input whose publishers' reliability no longer matches the subscription.

        The new subscription is made before the old one goes (the old one is destroyed on the next
        check), so no frame is lost in the switch; a frame both deliver is taken once.
        """
        for old in self._retired:
            self._node.destroy_subscription(old)
        self._retired.clear()
        for name, subscription in list(self._subscriptions.items()):
            publishers = self._node.get_publishers_info_by_topic(subscription.topic_name)
            if not publishers:
                continue
            qos, reliable, _ = matching_qos(publishers, depth=self._depths[name])
            if reliable == self._reliable[name]:
                continue
            qos.durability = CAMERA_QOS.durability  # volatile matches every publisher's durability
            self._subscribe(name, qos, reliable)
            self._retired.append(subscription)
            self._node.get_logger().info(
                f"{subscription.topic_name}: {len(publishers)} publisher(s), "
                + ("all reliable: subscribed reliably" if reliable
                   else "not all reliable: subscribed best-effort (matches every publisher)"))

    def destroy(self) -> None:
        """Unsubscribe everything (a managed node's deactivate)."""
        self._node.destroy_timer(self._timer)
        for subscription in [*self._subscriptions.values(), *self._retired]:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()
        self._retired.clear()

    @property
    def reliable(self) -> dict[str, bool]:
        """Input name -> whether it is subscribed reliably now."""
        return dict(self._reliable)

    def _now_ns(self) -> int:
        return self._clock.now().nanoseconds

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info.add(stamp_ns(msg.header), self._now_ns(), msg)

    def _on_depth(self, msg: Image) -> None:
        self._depth.add(stamp_ns(msg.header), self._now_ns(), msg)

    def _on_image(self, msg: Image) -> None:
        self._accept(msg.header, lambda: rgb_from_image_msg(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._accept(msg.header, lambda: rgb_from_compressed_msg(msg))

    def _accept(self, header: Any, decode: Callable[[], Any]) -> None:
        key = (int(header.stamp.sec), int(header.stamp.nanosec), header.frame_id)
        if self._retired and key in self._recent_keys:
            return  # delivered by both the old and the new subscription while they overlap
        self._recent_keys.append(key)
        self.received += 1
        self.arrivals.add(header.stamp.sec + header.stamp.nanosec * 1e-9, time.monotonic())
        try:
            rgb = decode()
        except ImageDecodeError as exc:
            self.bad += 1
            self._on_bad(header, f"bad image: {exc}")
            return
        self._on_frame(CameraFrame(Frame(rgb=rgb), header, time.monotonic(), received_ns=self._now_ns()))

    def _wait_s(self, item: CameraFrame) -> float:
        """What is left of the time a matching message may still arrive in (sync.max_age_s)."""
        return max(0.0, self.sync.max_age_s - (self._now_ns() - item.received_ns) / 1e9)

    def complete(self, item: CameraFrame) -> CameraFrame:
        """Join the depth and camera_info stamped like ``item`` (waiting, at most until ``sync.max_age_s``
        after the frame arrived, for ones still on their way); idempotent. Unmatched ones are not
        used and ``item.depth_error`` says why."""
        with self._lock:
            if item.completed:
                return item
            policy, frame = self.sync, item.frame
            stamp = stamp_ns(item.header)
            notes = []
            if policy.camera_info_static:
                info = self._camera_info.newest()
            else:
                info_match = self._camera_info.wait_match(stamp, item.received_ns, policy, "camera_info",
                                                          self._now_ns, self._wait_s(item))
                info = info_match.value
                if info_match.reason:
                    notes.append(info_match.reason)
            frame.intrinsics = intrinsics_from_camera_info(info) if info is not None else None
            depth_match = self._depth.wait_match(stamp, item.received_ns, policy, "depth", self._now_ns,
                                                 self._wait_s(item))
            if depth_match.reason:
                notes.append(depth_match.reason)
            if depth_match.value is not None:
                # Decoded here, on the worker, and only for frames the model will see.
                frame.depth_m, note = aligned_depth(lambda: metres_from_depth_msg(depth_match.value),
                                                    frame.rgb.shape)
                notes += [note] if note else []
            item.depth_error = "; ".join(notes) or None
            item.completed = True
            return item

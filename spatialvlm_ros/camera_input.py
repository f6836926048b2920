"""Camera subscriptions shared by the nodes that look at frames: image (raw or compressed), camera_info, depth.

Decodes each colour frame in the callback (microseconds for rgb8) so bad input is reported at once and
never reaches the model; depth and intrinsics ride along as the newest ones seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spatialvlm_ros.node_support import CAMERA_QOS
from spatialvlm_ros.spatial.estimator import Frame, intrinsics_from_camera_info
from spatialvlm_ros.spatial.imaging import (
    ImageDecodeError,
    metres_from_depth_msg,
    rgb_from_compressed_msg,
    rgb_from_image_msg,
)


@dataclass
class CameraFrame:
    """A decoded frame with the header of the message it came from and when it arrived."""

    frame: Frame
    header: Any  # std_msgs/Header of the source image
    received_monotonic_s: float
    depth_error: str | None = None


def stamp_dict(header: Any) -> dict[str, int]:
    return {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)}


class CameraInput:
    """Subscribes ``image`` or ``image/compressed`` (+ ``camera_info``, ``depth``) on ``node``.

    ``on_frame(CameraFrame)`` gets each good frame; ``on_bad(header, reason)`` each frame that could
    not be decoded. Both run on the executor thread and must be quick.
    """

    def __init__(
        self,
        node: Node,
        transport: str,
        on_frame: Callable[[CameraFrame], None],
        on_bad: Callable[[Any, str], None],
        callback_group: CallbackGroup | None = None,
        image_queue_depth: int = 1,
    ) -> None:
        self._on_frame = on_frame
        self._on_bad = on_bad
        self._lock = threading.Lock()
        self._camera_info: CameraInfo | None = None
        self._depth: Image | None = None
        self.received = 0
        self.bad = 0
        # Depth 1 for a camera (only the newest frame is used); deeper for frame_policy every, so that a
        # burst of simulator frames waits in DDS for the callback instead of being overwritten there.
        image_qos = CAMERA_QOS if image_queue_depth == 1 else QoSProfile(
            depth=image_queue_depth, reliability=CAMERA_QOS.reliability,
            durability=CAMERA_QOS.durability, history=CAMERA_QOS.history)
        if transport == "compressed":
            node.create_subscription(CompressedImage, "image/compressed", self._on_compressed,
                                     image_qos, callback_group=callback_group)
        else:
            node.create_subscription(Image, "image", self._on_image, image_qos,
                                     callback_group=callback_group)
        node.create_subscription(CameraInfo, "camera_info", self._on_camera_info, CAMERA_QOS,
                                 callback_group=callback_group)
        node.create_subscription(Image, "depth", self._on_depth, CAMERA_QOS,
                                 callback_group=callback_group)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._camera_info = msg

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._depth = msg

    def _on_image(self, msg: Image) -> None:
        self._accept(msg.header, lambda: rgb_from_image_msg(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._accept(msg.header, lambda: rgb_from_compressed_msg(msg))

    def _accept(self, header: Any, decode: Callable[[], Any]) -> None:
        self.received += 1
        try:
            rgb = decode()
        except ImageDecodeError as exc:
            self.bad += 1
            self._on_bad(header, f"bad image: {exc}")
            return
        with self._lock:
            info, depth_msg = self._camera_info, self._depth
        frame = Frame(rgb=rgb, intrinsics=intrinsics_from_camera_info(info) if info else None)
        depth_error = None
        if depth_msg is not None:
            # Depth is decoded here (~0.15 ms) so a bad depth image is reported with its frame.
            try:
                depth_m = metres_from_depth_msg(depth_msg)
                if depth_m.shape != rgb.shape[:2]:
                    depth_error = (f"depth {depth_m.shape[1]}x{depth_m.shape[0]} is not aligned with "
                                   f"image {rgb.shape[1]}x{rgb.shape[0]}; depth ignored")
                else:
                    frame.depth_m = depth_m
            except ImageDecodeError as exc:
                depth_error = f"bad depth image, ignored: {exc}"
        self._on_frame(CameraFrame(frame, header, time.monotonic(), depth_error))

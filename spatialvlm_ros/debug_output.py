"""``~/debug_image`` (sensor_msgs/Image) and ``~/markers`` (visualization_msgs/MarkerArray): what the model
saw and measured, for RViz, Foxglove and rqt_image_view. Published only while someone subscribes; the
drawing and the marker geometry are the core's (spatial/debug_view.py), this module only converts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from spatialvlm_ros.spatial.debug_view import MarkerSpec, debug_markers, render_debug_image
from spatialvlm_ros.spatial.estimator import Estimate, Frame
from spatialvlm_ros.spatial.imaging import rgb_to_image_fields

_KINDS = {"cube": Marker.CUBE, "line": Marker.LINE_LIST, "text": Marker.TEXT_VIEW_FACING}


def marker_array(specs: Sequence[MarkerSpec], header: Any) -> MarkerArray:
    """The specs as markers with ``header`` (the source image's: stamp and camera frame), after a
    DELETEALL so the previous frame's markers never linger."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for spec in specs:
        marker = Marker(header=header, ns=spec.ns, id=spec.marker_id, type=_KINDS[spec.kind], action=Marker.ADD,
                        text=spec.text)
        marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = spec.position
        (marker.pose.orientation.x, marker.pose.orientation.y, marker.pose.orientation.z,
         marker.pose.orientation.w) = spec.orientation_xyzw
        marker.scale.x, marker.scale.y, marker.scale.z = spec.scale
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = spec.rgba
        marker.points = [Point(x=p[0], y=p[1], z=p[2]) for p in spec.points]
        markers.append(marker)
    return MarkerArray(markers=markers)


class DebugOutputs:
    """The two debug publishers of a model node. ``wanted()`` is the only work done while nobody listens."""

    def __init__(self, node: Node, backend: str, max_image_pixels: int, fallback_hfov_deg: float) -> None:
        self._node = node
        self._backend = backend
        self._max_image_pixels = max_image_pixels
        self._fallback_hfov_deg = fallback_hfov_deg
        # In the node's private namespace (/spatialvlm_reward/debug_image, ...): reward and affordance
        # nodes share a namespace, and their pictures must not interleave on one topic.
        # Depth 1: a viewer wants the newest picture, never a backlog of them.
        self.image_pub = node.create_publisher(Image, "~/debug_image", 1)
        self.marker_pub = node.create_publisher(MarkerArray, "~/markers", 1)
        self.published = 0

    def wanted(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 or self.marker_pub.get_subscription_count() > 0

    def publish(self, header: Any, frame: Frame, lines: list[str], estimates: Sequence[Estimate]) -> None:
        """Draw and publish for the subscribers there are (call only when ``wanted()``). A failure here
        is logged and never costs the answer it illustrates."""
        try:
            self._publish(header, frame, lines, estimates)
        except Exception as exc:  # noqa: BLE001 - a debug view must not take the node down
            self._node.get_logger().warning(f"debug_image/markers not published: {type(exc).__name__}: {exc}",
                                            throttle_duration_sec=5.0)

    def _publish(self, header: Any, frame: Frame, lines: list[str], estimates: Sequence[Estimate]) -> None:
        if self.image_pub.get_subscription_count() > 0:
            rgb = render_debug_image(frame.rgb, lines, estimates, backend=self._backend,
                                     max_image_pixels=self._max_image_pixels, intrinsics=frame.intrinsics,
                                     fallback_hfov_deg=self._fallback_hfov_deg)
            msg = Image(**rgb_to_image_fields(rgb, "rgb8"))
            msg.header = header
            self.image_pub.publish(msg)
        if self.marker_pub.get_subscription_count() > 0:
            self.marker_pub.publish(marker_array(debug_markers(estimates), header))
        self.published += 1

    def destroy(self) -> None:
        self._node.destroy_publisher(self.image_pub)
        self._node.destroy_publisher(self.marker_pub)


def debug_outputs_for(node: Node, estimator: Any, values: dict[str, Any]) -> DebugOutputs:
    return DebugOutputs(node, getattr(estimator, "backend", ""), int(values.get("model.max_image_pixels", 0)),
                        float(values.get("model.fallback_hfov_deg", 60.0)))

"""Test helpers for the geometric backend: frames built from renders through the real depth decoding path,
and the issue's tolerance.

The detector stand-in (SceneTruthDetector: the synthetic scene's true boxes, since no real detector
weights exist here) lives in spatialvlm_ros.spatial.synth.geometry_truth, beside the scenes it knows.
"""

from __future__ import annotations

from spatialvlm_ros.spatial.estimator import Frame
from spatialvlm_ros.spatial.imaging import metres_from_depth_msg
from spatialvlm_ros.spatial.synth.geometry_truth import SceneTruthDetector
from spatialvlm_ros.spatial.synth.render import RenderResult

__all__ = ["SceneTruthDetector", "frame_from", "within"]


class DepthMsg:
    """The fields of a sensor_msgs/Image, for decoding without rclpy."""

    def __init__(self, fields: dict) -> None:
        self.__dict__.update(fields)


def frame_from(result: RenderResult, encoding: str = "16UC1", intrinsics: bool = True) -> Frame:
    """The Frame a node would build: depth through the real decoding of a depth message."""
    depth = metres_from_depth_msg(DepthMsg(result.depth_fields(encoding)))
    return Frame(rgb=result.rgb, depth_m=depth, intrinsics=result.camera.intrinsics if intrinsics else None)


def within(estimate: float, truth: float, rel: float = 0.02, abs_m: float = 0.01) -> bool:
    """The issue's tolerance: within ``rel`` of the truth or within ``abs_m``, whichever is looser."""
    return abs(estimate - truth) <= max(rel * abs(truth), abs_m)

"""spatial/debug_view.py without ROS: the debug image and the 3D markers built from real estimates.

The geometric estimates come from the real GeometricEstimator on a synthetic RGB-D scene, with
SceneTruthDetector, a DETECTOR STAND-IN returning the scene's true boxes (and masks), since no real
detector weights exist here.
"""

from __future__ import annotations

import numpy as np
import pytest
from geometry_helpers import SceneTruthDetector, frame_from
from scipy.spatial.transform import Rotation

from spatialvlm_ros.spatial.debug_view import (
    COLOURS,
    box_orientation,
    debug_markers,
    model_input_image,
    render_debug_image,
)
from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.estimator import ModelConfig, SpatialQuery, combine_answers
from spatialvlm_ros.spatial.geometric import GeometricEstimator
from spatialvlm_ros.spatial.synth.geometry_truth import random_camera, random_visible_scene

GRIPPER = "the robot gripper"


@pytest.fixture(scope="module")
def measured():
    """(frame, distance estimate, gap estimate) on one scene; the detector gives masks."""
    rng = np.random.default_rng(5)
    scene, result = random_visible_scene(rng, (2, 3), gripper=True, camera=random_camera(rng, 320, 240),
                                         gripper_distance=(0.2, 0.4))
    detector = SceneTruthDetector(masks=True)
    detector.register(result)
    estimator = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=detector)
    frame = frame_from(result)
    a, b = scene.objects[0].description, scene.objects[1].description
    distance, gap = estimator.estimate([
        (frame, SpatialQuery("distance", GRIPPER, a, "how far?")),
        (frame, SpatialQuery("gap_width", a, b, "how wide is the gap?")),
    ])
    assert distance.value_m is not None and gap.value_m is not None, (distance.reason, gap.reason)
    return frame, distance, gap


def _has_colour(image: np.ndarray, colour, tolerance: int = 10) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(colour)) <= tolerance, axis=-1)


def test_geometric_debug_image_shows_boxes_masks_segment_and_text(measured):
    frame, distance, _ = measured
    before = frame.rgb.copy()
    image = render_debug_image(frame.rgb, ["How far?", "about 30 cm"], [distance], backend="geometric",
                               intrinsics=frame.intrinsics)
    assert np.array_equal(frame.rgb, before)  # the source frame is not drawn on
    assert image.shape == frame.rgb.shape and image.dtype == np.uint8  # geometric: the full frame
    x0, y0, x1, y1 = (int(round(v)) for v in distance.details["objects"]["b"]["box"])
    # the box outline, in object b's colour, down its sides (below the text band, above the labels)
    for column in (x0, x1 - 1):
        assert _has_colour(image[y0 + 2:y0 + 20, column], COLOURS["b"]).all()
    # the segment between the two centres, in its colour, where nothing else is that colour
    assert _has_colour(image, COLOURS["segment"], 30).sum() > 20
    assert _has_colour(frame.rgb, COLOURS["segment"], 30).sum() == 0
    # the masks tint each object's own pixels towards its colour
    assert set(distance.masks) == {"a", "b"}
    mask = distance.masks["b"].copy()
    mask[:40] = False  # leave out the text band
    tinted, source = image[mask].astype(int), frame.rgb[mask].astype(int)
    blended = np.abs(tinted - (source + np.array(COLOURS["b"])) / 2).max(axis=1) <= 1
    assert blended.mean() > 0.7  # the rest is under the outline, the segment and the labels
    # the text band darkens the top rows
    assert image[:10].mean() < frame.rgb[:10].mean()


def test_vlm_debug_image_is_the_size_the_model_saw(measured):
    frame, _, _ = measured
    rgb = np.full((480, 640, 3), 200, np.uint8)
    vlm = combine_answers(SpatialQuery("distance", GRIPPER, "the cup", "How far?"), ["about 0.4 m"])
    image = render_debug_image(rgb, ["How far?", "about 0.4 m"], [vlm], backend="vlm", max_image_pixels=76800)
    assert image.shape[0] * image.shape[1] <= 76800 and image.shape[1] == 320  # 640x480 -> 320x240
    seen, scale = model_input_image(rgb, "vlm", 0)
    assert seen.shape == rgb.shape and scale == 1.0
    assert (image[:8] < 200).any() and (image[-8:] == 200).all()  # text at the top only
    assert debug_markers([vlm]) == []  # nothing measured in 3D


def test_markers_are_the_measured_boxes_and_segment_in_the_camera_frame(measured):
    _, distance, gap = measured
    specs = debug_markers([distance])
    cubes = [s for s in specs if s.kind == "cube"]
    objects = distance.details["objects"]
    assert [c.position for c in cubes] == [tuple(objects[k]["centre_m"]) for k in ("a", "b")]
    assert [c.scale for c in cubes] == [(objects[k]["width_m"], objects[k]["height_m"], objects[k]["length_m"])
                                        for k in ("a", "b")]
    (line,) = [s for s in specs if s.kind == "line"]
    assert line.points == [tuple(objects["a"]["centre_m"]), tuple(objects["b"]["centre_m"])]
    assert np.linalg.norm(np.subtract(*line.points)) == pytest.approx(distance.value_m, abs=1e-3)
    texts = {s.ns: s.text for s in specs if s.kind == "text"}
    assert texts["segment_length"] == format_distance(distance.value_m)
    # the gap's segment is the measured gap, not the centres
    (gap_line,) = [s for s in debug_markers([gap]) if s.kind == "line"]
    assert gap_line.points == [tuple(p) for p in gap.details["gap_points_m"]]
    assert np.linalg.norm(np.subtract(*gap_line.points)) == pytest.approx(gap.value_m, abs=1e-3)
    # an answer with no number draws no segment
    failed = combine_answers(SpatialQuery("distance", "a", "b", "?"), ["no idea"])
    assert debug_markers([failed]) == []


@pytest.mark.parametrize("normal", [(0.0, -1.0, 0.0), (0.0, -0.8, -0.6), (0.3, -0.9, 0.3)])
def test_box_orientation_stands_boxes_on_the_floor(normal):
    up = np.asarray(normal) / np.linalg.norm(normal)
    q = box_orientation(up)
    rotation = Rotation.from_quat(q)
    assert rotation.apply([0.0, 1.0, 0.0]) == pytest.approx(-up, abs=1e-9)  # box y: down the floor normal
    x = rotation.apply([1.0, 0.0, 0.0])
    assert x[1] * up[1] + x[0] * up[0] + x[2] * up[2] == pytest.approx(0.0, abs=1e-9)  # width lies flat
    assert x[0] > 0  # and points to the camera's right
    assert box_orientation(None) == (0.0, 0.0, 0.0, 1.0)

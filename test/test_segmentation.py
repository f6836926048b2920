"""Segmentation core (spatial/segmentation.py): which pixels are the object, at real ranges and in clutter.

Scenes are built here with known geometry (synth.clutter's large floor; truth from the scene definitions,
never from the code under test) at 640x480, the resolution the ranges are about. Detection is the true
box of each object (what a perfect detector gives); depth is perfect or has 1 % Gaussian noise rounded to
1 mm (what a 16UC1 depth camera delivers).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_helpers import within

from spatialvlm_ros.spatial import geometry as geo
from spatialvlm_ros.spatial.estimator import Intrinsics
from spatialvlm_ros.spatial.segmentation import FrameGeometry, SegmentationSettings, measure_boxes
from spatialvlm_ros.spatial.synth.camera import PinholeCamera
from spatialvlm_ros.spatial.synth.clutter import BIG_FLOOR, facing_width
from spatialvlm_ros.spatial.synth.geometry_truth import degrade_depth, fully_visible, true_box
from spatialvlm_ros.spatial.synth.render import render
from spatialvlm_ros.spatial.synth.scene import Scene, make_box, make_cylinder


def camera_at(distance: float, pitch_deg: float, azimuth_deg: float = -90.0,
              target=(0.0, 0.0, 0.0)) -> PinholeCamera:
    pitch, az = math.radians(pitch_deg), math.radians(azimuth_deg)
    t = np.asarray(target, float)
    eye = t + distance * np.array([math.cos(az) * math.cos(pitch), math.sin(az) * math.cos(pitch), math.sin(pitch)])
    return PinholeCamera.look_at(tuple(eye), tuple(t), 640, 480, 60.0)


def rendered(objects, camera):
    result = render(Scene(tuple(objects), None, camera, BIG_FLOOR))
    assert fully_visible(result), "the test scene must show every object whole"
    return result


def noisy(result, seed=0):
    return degrade_depth(result.depth_m, np.random.default_rng(seed), relative_std=0.01, quantum_m=0.001)


def measure_all(result, depth, masks=False):
    scene = result.scene
    boxes = [true_box(result, o.description) for o in scene.objects]
    mask_list = [result.mask(o.description) for o in scene.objects] if masks else None
    frame, measured = measure_boxes(depth, scene.camera.intrinsics, boxes, mask_list)
    for m in measured:
        assert isinstance(m, geo.ObjectGeometry), m
    return frame, dict(zip((o.description for o in scene.objects), measured, strict=True))


def check_scene(result, depth, masks=False):
    """Every distance, gap, width and height of the scene within 2 % or 1 cm; no gap 0 between objects
    that stand apart. Returns the measured gaps."""
    scene = result.scene
    frame, measured = measure_all(result, depth, masks)
    assert frame.floor is not None
    gaps = {}
    for o in scene.objects:
        m = measured[o.description]
        assert m.rests_on_floor
        assert within(m.width_m, facing_width(o, scene.camera)), (o.description, "width", m.width_m)
        assert within(m.height_m, o.size[2]), (o.description, "height", m.height_m, o.size[2])
    objs = scene.objects
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            ma, mb = measured[a.description], measured[b.description]
            assert within(geo.centre_distance(ma, mb), scene.distance(a, b))
            gap = geo.footprint_gap(ma, mb, frame.frame)[0]
            true_gap = scene.gap(a, b).width_m
            assert within(gap, true_gap), (a.description, b.description, gap, true_gap)
            if true_gap >= 0.02:
                assert gap > 0.0
            gaps[(a.description, b.description)] = gap
    return gaps


# Two boxes side by side 2 cm apart, and a cylinder 6 cm behind and beside one of them.
def clutter():
    a = make_box("red", (-0.07, 0.0), (0.12, 0.10, 0.15))
    b = make_box("blue", (0.06, 0.0), (0.10, 0.14, 0.08))
    c = make_cylinder("green", (0.19, 0.16), 0.06, 0.12)
    return a, b, c


@pytest.mark.parametrize("distance,pitch", [(0.6, 55.0), (2.4, 35.0)])
def test_true_boxes_in_clutter_near_and_far_perfect_and_noisy_depth(distance, pitch):
    result = rendered(clutter(), camera_at(distance, pitch))
    check_scene(result, result.depth_m)
    check_scene(result, noisy(result, seed=3))


def test_true_masks_give_the_same_accuracy():
    result = rendered(clutter(), camera_at(2.4, 35.0))
    check_scene(result, noisy(result, seed=4), masks=True)


def test_small_objects_2_cm_apart_at_2_5_m_are_not_merged():
    # The hardest corner of the wide bench: 3 cm objects 2 cm apart, 2.5 m away (7 pixels across).
    a = make_box("red", (-0.026, 0.0), (0.032, 0.032, 0.05))
    b = make_cylinder("blue", (0.026, 0.0), 0.016, 0.06)
    result = rendered((a, b), camera_at(2.5, 40.0))
    gaps = check_scene(result, result.depth_m)
    assert list(gaps.values())[0] > 0.01
    for seed in (5, 6, 7):
        frame, measured = measure_all(result, noisy(result, seed))
        ma, mb = measured[a.description], measured[b.description]
        gap = geo.footprint_gap(ma, mb, frame.frame)[0]
        assert within(gap, 0.02) and gap > 0.01  # never merged, never "touching"
        assert within(ma.width_m, 0.032) and within(mb.width_m, 0.032)
        # With 2.5 cm of noise per pixel and ~80 pixels per object the top is a noisy extreme: within
        # 2 cm, not always within 1 cm (the README says so).
        assert abs(ma.height_m - 0.05) < 0.02 and abs(mb.height_m - 0.06) < 0.02


def test_stray_pixels_inside_the_box_move_no_extreme():
    obj = make_cylinder("orange", (0.0, 0.0), 0.05, 0.10)
    camera = camera_at(1.5, 45.0)
    result = rendered((obj,), camera)
    box = true_box(result, obj.description)
    depth = result.depth_m.copy()
    # Flying pixels: a few floor pixels in the box's corner read as if something hung 20 cm above the
    # floor there (what a stereo camera's mismatches look like).
    rows, cols = geo.box_slices(box, depth.shape)
    corner = np.argwhere(result.instance[rows, cols] == 1)[:6]
    k = camera.intrinsics
    for r, c in corner:
        v, u = r + rows.start, c + cols.start
        ray = camera.rays(np.array([u]), np.array([v]))[0]
        t_hit = (0.20 - camera.position[2]) / ray[2]  # where this ray is 20 cm above the floor
        depth[v, u] = t_hit
    fg = FrameGeometry.build(depth, k, [box])
    m, points = fg.measure(box)
    assert within(m.height_m, 0.10) and within(m.width_m, 0.10)
    assert points.info["outlier_pixels_removed"] + points.info["mixed_pixels_removed"] >= len(corner)
    # The old rule (26-connected 3D voxels, raw extremes) kept them: the spot it would have measured.
    old = SegmentationSettings(connectivity="voxel", drop_mixed=False, cluster_median=False, top_percentile=100)
    fg_old = FrameGeometry.build(depth, k, [box], old)
    assert fg_old.measure(box)[0].height_m > m.height_m


def test_touching_objects_have_gap_zero_or_nearly():
    a = make_box("red", (-0.05, 0.0), (0.10, 0.10, 0.10))
    b = make_box("blue", (0.05, 0.0), (0.10, 0.10, 0.06))  # its left face is the red box's right face
    result = rendered((a, b), camera_at(1.0, 45.0))
    for depth in (result.depth_m, noisy(result, seed=6)):
        frame, measured = measure_all(result, depth)
        gap = geo.footprint_gap(measured[a.description], measured[b.description], frame.frame)[0]
        assert gap < 0.01


def test_segmentation_details_say_what_ran():
    result = rendered(clutter(), camera_at(1.5, 40.0))
    boxes = [true_box(result, o.description) for o in result.scene.objects]
    fg = FrameGeometry.build(result.depth_m, result.scene.camera.intrinsics, boxes)
    _, from_box = fg.measure(boxes[0], None, boxes[1:])
    _, from_mask = fg.measure(boxes[0], result.mask(result.scene.objects[0].description), boxes[1:],
                              mask_source="segmenter")
    assert from_box.info["mask_source"] == "box" and from_mask.info["mask_source"] == "segmenter"
    for info in (from_box.info, from_mask.info):
        assert info["points"] > 100 and 0.0 <= info["floor_share"] <= 1.0
        for key in ("floor_pixels_removed", "outlier_pixels_removed", "other_object_pixels_removed",
                    "mixed_pixels_removed"):
            assert info[key] >= 0
    assert from_box.info["floor_pixels_removed"] > from_mask.info["floor_pixels_removed"]
    assert fg.to_dict()["floor"]["inlier_share"] > 0.5


def test_bad_inputs_are_errors_that_say_why():
    k = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    with pytest.raises(geo.GeometryError, match="no valid pixels"):
        FrameGeometry.build(np.full((48, 64), np.nan, np.float32), k)
    with pytest.raises(geo.GeometryError, match=r"\(H, W\)"):
        FrameGeometry.build(np.ones((48, 64, 3), np.float32), k)
    fg = FrameGeometry.build(np.full((48, 64), 1.0, np.float32), k)
    with pytest.raises(geo.GeometryError, match="outside"):
        fg.segment((100, 100, 120, 120))
    with pytest.raises(geo.GeometryError, match="empty"):
        fg.segment((10, 10, 30, 30), np.zeros((48, 64), bool))
    with pytest.raises(geo.GeometryError, match="mask is 10x10"):
        fg.segment((10, 10, 30, 30), np.ones((10, 10), bool))
    # One bad box among good ones: the others are still measured.
    result = rendered(clutter(), camera_at(1.5, 40.0))
    boxes = [true_box(result, o.description) for o in result.scene.objects] + [(900.0, 900.0, 950.0, 950.0)]
    _, measured = measure_boxes(result.depth_m, result.scene.camera.intrinsics, boxes)
    assert all(isinstance(m, geo.ObjectGeometry) for m in measured[:3])
    assert isinstance(measured[3], geo.GeometryError) and "outside" in str(measured[3])
    with pytest.raises(ValueError, match="masks for"):
        measure_boxes(result.depth_m, result.scene.camera.intrinsics, boxes, [None])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="median_px"):
        SegmentationSettings(median_px=4)
    with pytest.raises(ValueError, match="connectivity"):
        SegmentationSettings(connectivity="graph")

"""Geometry core (spatial/geometry.py) on synthetic RGB-D scenes with known ground truth.

Ground truth comes from the scene definitions (synth.scene, synth.geometry_truth); the renderer only
provides pixels. The 50-scene accuracy check runs at 320x240 to stay fast; bench/geometry_accuracy.py
prints the full table at 640x480.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_helpers import within

from spatialvlm_ros.spatial import geometry as geo
from spatialvlm_ros.spatial.estimator import Intrinsics
from spatialvlm_ros.spatial.segmentation import FrameGeometry
from spatialvlm_ros.spatial.synth.camera import PinholeCamera
from spatialvlm_ros.spatial.synth.geometry_truth import (
    degrade_depth,
    object_truth,
    random_camera,
    random_visible_scene,
    true_box,
)
from spatialvlm_ros.spatial.synth.render import render
from spatialvlm_ros.spatial.synth.scene import Scene, make_cube, make_cylinder


def measure_scene(result, depth=None, use_masks=True):
    """Every object of a rendered scene measured from its mask (or true box) and the depth."""
    scene = result.scene
    depth = result.depth_m if depth is None else depth
    boxes = {o.description: true_box(result, o.description) for o in scene.objects}
    fg = FrameGeometry.build(depth, scene.camera.intrinsics, list(boxes.values()), floor_stride=2)
    out = {}
    for obj in scene.objects:
        mask = result.mask(obj.description) if use_masks else None
        others = [b for name, b in boxes.items() if name != obj.description]
        out[obj.description] = fg.measure(boxes[obj.description], mask, others)[0]
    return out, fg.frame, fg.floor


def errors_for(result, measured, frame):
    """(measured, true) pairs per measure for every object and pair of objects."""
    scene = result.scene
    pairs = {"distance": [], "gap": [], "width": [], "height": []}
    objs = scene.objects
    for o in objs:
        pairs["width"].append((measured[o.description].width_m, o.width))
        pairs["height"].append((measured[o.description].height_m, o.size[2]))
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            ma, mb = measured[a.description], measured[b.description]
            pairs["distance"].append((geo.centre_distance(ma, mb), scene.distance(a, b)))
            pairs["gap"].append((geo.footprint_gap(ma, mb, frame)[0], scene.gap(a, b).width_m))
    return pairs


# ------------------------------------------------------------------ camera model and floor

def test_lift_follows_the_pinhole_convention_of_the_renderer():
    scene = Scene((make_cube("red", (0.0, 0.2), 0.06),), camera=random_camera(np.random.default_rng(3), 160, 120))
    result = render(scene, shadows=False)
    points, valid = geo.lift(result.depth_m, scene.camera.intrinsics)
    assert valid.all()
    table = result.instance == 1
    world = scene.camera.camera_to_world(points[table])
    assert np.abs(world[:, 2]).max() < 1e-4  # table pixels land on the table plane z = 0
    cube = scene.camera.camera_to_world(points[result.mask("the red cube")])
    assert cube[:, 2].max() == pytest.approx(0.06, abs=1e-4)


def test_intrinsics_from_fov_and_scaling_of_camera_info():
    k = geo.intrinsics_from_fov(640, 480, 90.0)
    assert k.fx == pytest.approx(320.0) and k.cx == pytest.approx(319.5) and k.cy == pytest.approx(239.5)
    same, note = geo.intrinsics_for_image(k, 640, 480)
    assert same is k and note == ""
    half, note = geo.intrinsics_for_image(k, 320, 240)
    assert half.fx == pytest.approx(160.0) and half.cx == pytest.approx(159.5) and "scaled" in note
    other, note = geo.intrinsics_for_image(k, 320, 320)
    assert other is None and "aspect ratio" in note
    assert geo.intrinsics_for_image(None, 10, 10) == (None, "no camera_info")
    with pytest.raises(ValueError):
        geo.intrinsics_from_fov(640, 480, 180.0)


def test_floor_is_the_table_not_the_wall():
    camera = PinholeCamera.look_at((0.0, -0.4, 0.5), (0.0, 0.5, 0.05), 160, 120, 70.0)
    result = render(Scene((make_cube("red", (0.0, 0.2), 0.06),), camera=camera), shadows=False)
    points, valid = geo.lift(result.depth_m, camera.intrinsics)
    assert (result.instance == 0).sum() > 1000  # the wall is in view
    floor = geo.fit_floor(points[valid])
    up_in_camera = camera.rotation.T @ np.array([0.0, 0.0, 1.0])
    assert floor is not None and np.dot(floor.normal, up_in_camera) > 0.9999
    assert floor.offset == pytest.approx(0.5, abs=1e-3)  # the camera's height above the table
    # a wall alone is no floor
    wall = points[result.instance == 0]
    assert geo.fit_floor(wall) is None
    assert geo.fit_floor(points[valid][:10]) is None


def test_far_readings_do_not_tilt_the_floor():
    # A wall seen edge-on reads absurd depths; under a depth-proportional tolerance they would be inliers
    # of any plane and drag the least-squares refit.
    camera = PinholeCamera.look_at((0.0, -1.0, 0.6), (0.0, 0.3, 0.0), 160, 120, 60.0)
    result = render(Scene((), camera=camera), shadows=False)
    points, valid = geo.lift(result.depth_m, camera.intrinsics)
    far = points[valid][:400]
    far = far / far[:, 2:3] * np.linspace(1e3, 3e5, len(far))[:, None]  # along their rays, 1-300 km
    floor = geo.fit_floor(np.concatenate([points[result.instance == 1], far]))
    assert floor is not None and floor.offset == pytest.approx(0.6, abs=2e-3)


def test_depth_noise_estimate():
    result = render(Scene((), camera=random_camera(np.random.default_rng(4), 160, 120)))
    assert geo.depth_noise_rel(result.depth_m) < 1e-3
    noisy = degrade_depth(result.depth_m, np.random.default_rng(0), relative_std=0.01, quantum_m=0.0)
    assert geo.depth_noise_rel(noisy) == pytest.approx(0.01, rel=0.2)


def test_degrade_depth_quantises_and_drops_pixels():
    depth = np.full((50, 50), 0.73456, np.float32)
    out = degrade_depth(depth, np.random.default_rng(1), relative_std=0.0, quantum_m=0.001, missing_fraction=0.2)
    assert np.nanmax(out) == pytest.approx(0.735, abs=1e-6)
    assert 0.1 < np.isnan(out).mean() < 0.3


# ------------------------------------------------------------------ accuracy on generated scenes

def test_known_masks_and_perfect_depth_within_2_percent_or_1_cm_over_50_scenes():
    rng = np.random.default_rng(2024)
    worst = {}
    count = {"distance": 0, "gap": 0, "width": 0, "height": 0}
    for _ in range(50):
        _, result = random_visible_scene(rng, camera=random_camera(rng, 320, 240))
        measured, frame, floor = measure_scene(result)
        assert floor is not None
        for kind, pairs in errors_for(result, measured, frame).items():
            for est, true in pairs:
                count[kind] += 1
                assert within(est, true), f"{kind}: {est:.4f} m measured, {true:.4f} m true"
                worst[kind] = max(worst.get(kind, 0.0), abs(est - true))
    assert min(count.values()) >= 50
    assert worst["distance"] < 0.005 and worst["height"] < 0.005


def test_true_boxes_without_masks_separate_objects_from_floor_and_wall():
    rng = np.random.default_rng(7)
    for _ in range(8):
        _, result = random_visible_scene(rng, camera=random_camera(rng, 320, 240))
        measured, frame, _ = measure_scene(result, use_masks=False)
        for kind, pairs in errors_for(result, measured, frame).items():
            for est, true in pairs:
                assert within(est, true), f"{kind}: {est:.4f} m measured, {true:.4f} m true"


def test_noisy_depth_stays_close():
    rng = np.random.default_rng(11)
    rel = {"distance": [], "height": []}
    for _ in range(8):
        _, result = random_visible_scene(rng, camera=random_camera(rng, 320, 240))
        noisy = degrade_depth(result.depth_m, rng, relative_std=0.01, quantum_m=0.001)
        measured, frame, _ = measure_scene(result, depth=noisy)
        for kind, pairs in errors_for(result, measured, frame).items():
            if kind in rel:
                rel[kind] += [abs(e - t) / t for e, t in pairs]
    assert np.median(rel["distance"]) < 0.02
    assert np.median(rel["height"]) < 0.1


def test_touching_objects_have_no_gap_and_closest_distance_is_small():
    camera = PinholeCamera.look_at((0.0, -0.3, 0.5), (0.0, 0.2, 0.0), 320, 240, 60.0)
    a = make_cube("red", (-0.03, 0.2), 0.06)
    b = make_cylinder("blue", (0.035, 0.2), 0.035, 0.08)  # its side touches the cube's right face
    result = render(Scene((a, b), camera=camera), shadows=False)
    measured, frame, _ = measure_scene(result)
    ma, mb = measured[a.description], measured[b.description]
    gap, pa, pb = geo.footprint_gap(ma, mb, frame)
    assert gap < 0.004
    closest, _, _ = geo.closest_distance(ma, mb)
    assert closest < 0.006 < geo.centre_distance(ma, mb)
    assert np.linalg.norm(pa - pb) == pytest.approx(gap, abs=1e-6)


def test_overlapping_footprints_give_gap_zero():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    cross = np.array([[0.4, -1], [0.6, -1], [0.6, 2], [0.4, 2]], float)  # crosses, no corner inside

    def fake(footprint):
        return geo.ObjectGeometry(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(3), np.zeros(3), 1.0, 1.0, 1.0,
                                  footprint, False)

    gap, _, _ = geo.footprint_gap(fake(square), fake(cross), geo.MeasurementFrame.camera())
    assert gap == 0.0
    gap, _, _ = geo.footprint_gap(fake(square), fake(square + [3.0, 0.0]), geo.MeasurementFrame.camera())
    assert gap == pytest.approx(2.0)


def test_segmentation_refuses_boxes_without_depth():
    k = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    depth = np.full((48, 64), np.nan, np.float32)
    depth[:, 40:] = 1.0
    fg = FrameGeometry.build(depth, k)
    with pytest.raises(geo.GeometryError, match="valid depth"):
        fg.segment((0, 0, 30, 48))
    with pytest.raises(geo.GeometryError, match="outside"):
        fg.segment((100, 100, 120, 120))
    obj = fg.segment((40, 0, 64, 48))
    assert len(obj.points) == 24 * 48


def test_camera_frame_without_a_floor_still_measures():
    # A camera looking straight at a wall: no floor, so the camera frame is used.
    k = geo.intrinsics_from_fov(160, 120, 60.0)
    depth = np.full((120, 160), 2.0, np.float32)
    depth[40:80, 30:60] = 1.0  # two flat patches in front of the wall
    depth[40:80, 100:130] = 1.0
    fg = FrameGeometry.build(depth, k)
    assert fg.floor is None and not fg.frame.on_floor
    frame = fg.frame
    a, _ = fg.measure((30, 40, 60, 80))
    b, _ = fg.measure((100, 40, 130, 80))
    spacing = 70 / k.fx  # 70 px apart at 1 m
    assert geo.centre_distance(a, b) == pytest.approx(spacing, rel=0.01)
    assert a.height_m == pytest.approx(39 / k.fy, rel=0.01)
    assert geo.footprint_gap(a, b, frame)[0] == pytest.approx(41 / k.fx, rel=0.01)


def test_box_iou():
    assert geo.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert geo.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert geo.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_gripper_truth_is_its_body_centre_above_the_tcp():
    rng = np.random.default_rng(5)
    scene, _ = random_visible_scene(rng, gripper=True, camera=random_camera(rng, 160, 120))
    truth = object_truth(scene, "the robot gripper")
    tcp = np.asarray(scene.gripper.tcp)
    assert truth.centre[:2] == pytest.approx(tcp[:2])
    assert 0.04 < truth.centre[2] - tcp[2] < 0.08
    assert math.isclose(object_truth(scene, scene.objects[0].description).height, scene.objects[0].size[2])

"""Synthetic scenes: camera geometry, rendering against the scene definition, ground truth, QA, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialvlm_ros.spatial.distance_text import parse_distance
from spatialvlm_ros.spatial.imaging import depth_to_metres
from spatialvlm_ros.spatial.metrics import metric_summary, spearman
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE
from spatialvlm_ros.spatial.synth import (
    GRIPPER_ID,
    QA_KINDS,
    TABLE_ID,
    Gripper,
    PinholeCamera,
    Scene,
    closer_qa,
    default_camera,
    footprint_gap,
    gap_qa,
    gripper_distance_qa,
    left_right_qa,
    make_box,
    make_cube,
    make_cylinder,
    random_approach,
    random_scene,
    render,
    sample_qa,
    width_qa,
)


@pytest.fixture(scope="module")
def camera() -> PinholeCamera:
    return default_camera(320, 240)


@pytest.fixture(scope="module")
def scene(camera) -> Scene:
    objects = (make_cube("red", (-0.12, 0.18), 0.06, 0.3), make_cylinder("blue", (0.1, 0.22), 0.03, 0.1),
               make_box("green", (0.0, 0.36), (0.12, 0.05, 0.04), 0.0))
    return Scene(objects, Gripper((0.2, 0.02, 0.1), yaw=0.4), camera)


@pytest.fixture(scope="module")
def frame(scene):
    return render(scene)


# ------------------------------------------------------------------ camera


def test_projection_of_known_points_follows_the_pinhole_model():
    cam = PinholeCamera.look_at((0.0, -0.3, 0.5), (0.0, 0.26, 0.06), 640, 480, 58.0)
    k = cam.intrinsics
    assert k.fx == pytest.approx(320 / math.tan(math.radians(29)))
    # The look-at point lies on the optical axis: it projects to the principal point.
    uv, z = cam.project(np.array([0.0, 0.26, 0.06]))
    assert uv == pytest.approx([k.cx, k.cy]) and z == pytest.approx(math.dist((0, -0.3, 0.5), (0, 0.26, 0.06)))
    # A point 10 cm to the right of it (world x) at the same depth: u = cx + fx * 0.1 / z.
    uv2, z2 = cam.project(np.array([0.1, 0.26, 0.06]))
    assert z2 == pytest.approx(z) and uv2[0] == pytest.approx(k.cx + k.fx * 0.1 / z) and uv2[1] == pytest.approx(k.cy)
    # Back-projection inverts projection; camera_to_world inverts world_to_camera.
    points = np.array([[0.1, 0.2, 0.0], [-0.2, 0.4, 0.1], [0.05, 0.0, 0.3]])
    uv, z = cam.project(points)
    cam_pts = cam.backproject(uv[:, 0], uv[:, 1], z)
    assert cam.camera_to_world(cam_pts) == pytest.approx(points)
    # World z up maps to image up: a higher point has a smaller v.
    assert cam.project(np.array([0.0, 0.2, 0.2]))[0][1] < cam.project(np.array([0.0, 0.2, 0.0]))[0][1]


def test_scaled_camera_keeps_the_field_of_view(camera):
    big = camera.scaled(640, 480)
    p = np.array([0.1, 0.3, 0.05])
    assert big.project(p)[0] == pytest.approx((camera.project(p)[0] + 0.5) * 2 - 0.5)
    assert big.k_matrix()[0] == pytest.approx(2 * camera.k_matrix()[0])


# ------------------------------------------------------------------ rendering vs the scene definition


def test_render_shapes_and_types(frame, camera):
    assert frame.rgb.shape == (240, 320, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.shape == (240, 320) and frame.depth_m.dtype == np.float32
    assert frame.instance.shape == (240, 320)
    assert np.isfinite(frame.depth_m).all() and (frame.depth_m > 0).all()


def test_every_object_pixel_back_projects_onto_that_object(frame, scene):
    cam = scene.camera
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    points = cam.camera_to_world(cam.backproject(u, v, frame.depth_m.astype(float)))
    for obj in scene.objects:
        mask = frame.mask(obj.description)
        assert mask.sum() > 30, obj.description
        assert obj.solid.contains(points[mask], margin=1e-6).all(), obj.description
    table = frame.instance == TABLE_ID
    assert np.abs(points[table][:, 2]).max() < 1e-6  # the table top is the plane z = 0
    gripper_parts = [solid for solid, _ in scene.gripper.parts()]
    on_gripper = np.zeros(int(frame.mask("gripper").sum()), bool)
    for solid in gripper_parts:
        on_gripper |= solid.contains(points[frame.mask("gripper")], margin=1e-6)
    assert on_gripper.all()


def test_depth_at_projected_top_centres_is_their_camera_depth(frame, scene):
    for obj in scene.objects:
        top = obj.centre + np.array([0.0, 0.0, obj.size[2] / 2])
        uv, z = scene.camera.project(top)
        u, v = int(round(uv[0])), int(round(uv[1]))
        assert frame.instance[v, u] == frame.instance_id(obj.description)
        # the depth varies across a pixel; within a pixel's footprint of the top face
        assert frame.depth_m[v, u] == pytest.approx(z, abs=0.004)


def test_gripper_occludes_what_is_behind_it(scene):
    # Put the gripper straight between the camera and the red cube: the cube loses pixels there,
    # and those pixels carry the gripper's (smaller) depth.
    cube = scene.find("the red cube")
    eye = scene.camera.position
    tcp = eye + 0.55 * (cube.centre - eye)
    hidden = render(scene.with_gripper(Gripper(tuple(tcp))))
    clear = render(scene.with_gripper(None))
    cube_id = clear.instance_id("the red cube")
    lost = (clear.instance == cube_id) & (hidden.instance == GRIPPER_ID)
    assert lost.sum() > 20
    assert (hidden.depth_m[lost] < clear.depth_m[lost]).all()
    assert (clear.instance != GRIPPER_ID).all()


def test_drop_shadow_darkens_the_table_under_the_gripper(scene):
    with_shadow, without = render(scene), render(scene, shadows=False)
    darker = (with_shadow.instance == TABLE_ID) & (with_shadow.rgb.sum(-1) < without.rgb.sum(-1))
    assert darker.sum() > 50
    assert (with_shadow.depth_m == without.depth_m).all()


def test_depth_in_both_encodings_round_trips(frame):
    mm = depth_to_metres(**_fields(frame.depth_fields("16UC1")))
    assert np.abs(mm - frame.depth_m).max() <= 0.0005 + 1e-6
    m = depth_to_metres(**_fields(frame.depth_fields("32FC1")))
    assert (m == frame.depth_m).all()


def _fields(fields: dict) -> dict:
    return {k: fields[k] for k in ("encoding", "height", "width", "step", "data", "is_bigendian")}


def test_depth_noise_and_missing_pixels(scene):
    clean = render(scene)
    noisy = render(scene, depth_noise_std_m=0.01, missing_depth_fraction=0.2, rng=np.random.default_rng(0))
    missing = np.isnan(noisy.depth_m)
    assert 0.17 < missing.mean() < 0.23
    err = (noisy.depth_m - clean.depth_m)[~missing]
    assert 0.009 < err.std() < 0.011
    quad = render(scene, depth_noise_std_m=0.01, depth_noise="quadratic", rng=np.random.default_rng(0))
    far = clean.depth_m > 0.9
    assert np.std((quad.depth_m - clean.depth_m)[far]) > np.std((quad.depth_m - clean.depth_m)[clean.depth_m < 0.6])
    assert (noisy.rgb == clean.rgb).all() and (noisy.instance == clean.instance).all()
    with pytest.raises(ValueError, match="accepted: constant, quadratic"):
        render(scene, depth_noise_std_m=0.01, depth_noise="gaussian")


# ------------------------------------------------------------------ ground truth from the definition


def test_ground_truth_distances_gaps_and_sizes(scene):
    cube, cyl, box = scene.objects
    assert scene.distance(cube, cyl) == pytest.approx(math.dist(cube.centre, cyl.centre))
    assert scene.gripper_distance("blue cylinder") == pytest.approx(math.dist((0.2, 0.02, 0.1), cyl.centre))
    assert scene.width("the red cube") == pytest.approx(0.06) and scene.width(cyl) == pytest.approx(0.06)
    assert box.size == pytest.approx((0.12, 0.05, 0.04)) and box.centre[2] == pytest.approx(0.02)
    # Two axis-aligned cubes side by side: the gap is between their facing sides.
    a, b = make_cube("red", (0.0, 0.0), 0.1), make_cube("blue", (0.3, 0.0), 0.06)
    gap, pa, pb = footprint_gap(a.solid, b.solid)
    assert gap == pytest.approx(0.3 - 0.05 - 0.03)
    assert pa[0] == pytest.approx(0.05) and pb[0] == pytest.approx(0.27)
    c1, c2 = make_cylinder("red", (0, 0), 0.04, 0.1), make_cylinder("blue", (0, 0.2), 0.03, 0.1)
    assert footprint_gap(c1.solid, c2.solid)[0] == pytest.approx(0.13)
    assert footprint_gap(a.solid, c2.solid)[0] == pytest.approx(0.2 - 0.05 - 0.03)
    assert footprint_gap(a.solid, make_cube("green", (0.05, 0.05), 0.1).solid)[0] == 0.0  # overlapping
    g = Scene((a, b)).gap("the red cube", "the blue cube")
    assert g.width_m == pytest.approx(0.22) and g.point_a[2] == 0.0


def test_scene_lookup_and_validation(scene):
    assert scene.find("Red Cube") is scene.find("the red cube")
    with pytest.raises(KeyError, match="it has: the red cube"):
        scene.find("the pink cube")
    with pytest.raises(ValueError, match="unique"):
        Scene((make_cube("red", (0, 0), 0.05), make_cube("red", (0.2, 0), 0.05)))
    with pytest.raises(ValueError, match="accepted: red"):
        make_cube("pink", (0, 0), 0.05)


def test_random_scenes_are_reproducible_and_valid():
    a = random_scene(np.random.default_rng(3))
    b = random_scene(np.random.default_rng(3))
    assert [o.description for o in a.objects] == [o.description for o in b.objects]
    assert a.gripper == b.gripper
    rng = np.random.default_rng(11)
    for _ in range(20):
        s = random_scene(rng)
        assert 2 <= len(s.objects) <= 4
        kinds = [(o.colour, o.shape) for o in s.objects]
        assert len(set(kinds)) == len(kinds)
        for i, o in enumerate(s.objects):
            for other in s.objects[i + 1:]:
                assert footprint_gap(o.solid, other.solid)[0] >= 0.03
        uv, z = s.camera.project(np.asarray(s.gripper.tcp))
        assert z > 0 and 0 <= uv[0] < s.camera.width and 0 <= uv[1] < s.camera.height


def test_random_approach_closes_in_on_its_target():
    traj = random_approach(np.random.default_rng(5), 10)
    d = np.array(traj.distances_m)
    assert (np.diff(d) < 0).all() and d[0] > 0.4 and d[-1] < 0.2
    assert all(s.gripper_distance(traj.target) == pytest.approx(x) for s, x in zip(traj.scenes, d, strict=True))


# ------------------------------------------------------------------ QA


def test_reward_question_reads_like_the_node_and_answers_within_10_percent(scene):
    qa = gripper_distance_qa(scene, "the blue cylinder")  # no rng: the node's default words
    assert qa.question == DEFAULT_DISTANCE_TEMPLATE.format(gripper="the robot gripper",
                                                           target="the blue cylinder")
    truth = scene.gripper_distance("the blue cylinder")
    assert qa.value == pytest.approx(truth)
    assert parse_distance(qa.answer) == pytest.approx(truth, rel=0.1)


def test_every_metric_answer_parses_back_within_10_percent():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(300):
        s = random_scene(rng)
        qa = sample_qa(s, rng)
        seen.add(qa.kind)
        if qa.metric:
            assert parse_distance(qa.answer) == pytest.approx(qa.value, rel=0.1), qa
            assert any(o in qa.question for o in qa.objects if o != "gripper")
        else:
            assert qa.answer in ("Yes.", "No.") or qa.answer.lower().rstrip(".") == qa.value
    assert seen == set(QA_KINDS)
    with pytest.raises(ValueError, match="unknown QA kinds"):
        sample_qa(s, rng, {"height": 1.0})


def test_questions_name_objects_by_colour_and_shape():
    objs = (make_cube("red", (-0.1, 0.2), 0.05), make_cylinder("red", (0.1, 0.2), 0.03, 0.1),
            make_cube("blue", (0.0, 0.35), 0.05))
    s = Scene(objs, Gripper((0.1, 0.1, 0.15)))
    q_cube = gripper_distance_qa(s, "the red cube")
    q_cyl = gripper_distance_qa(s, "the red cylinder")
    assert "the red cube" in q_cube.question and "the red cylinder" in q_cyl.question
    assert q_cube.value != pytest.approx(q_cyl.value)
    assert gap_qa(s, objs[0], objs[1]).value == pytest.approx(0.2 - 0.025 - 0.03)
    assert width_qa(s, objs[1]).answer == "about 6 cm"


def test_left_right_and_closer_follow_the_geometry(scene):
    cube, cyl, _ = scene.objects
    rng = np.random.default_rng(0)
    for _ in range(6):
        qa = left_right_qa(scene, cube, cyl, rng)
        left_in_image = scene.camera.project(cube.centre)[0][0] < scene.camera.project(cyl.centre)[0][0]
        assert qa.value == (left_in_image == ("left" in qa.question))
        assert qa.answer == ("Yes." if qa.value else "No.")
    qa = closer_qa(scene, cube, cyl)
    nearer = min((cube, cyl), key=scene.gripper_distance)
    assert qa.value == nearer.description and qa.answer == nearer.description.capitalize() + "."
    # Nearly aligned or equally far: not asked.
    twin = Scene((make_cube("red", (0, 0.2), 0.05), make_cube("blue", (0.01, 0.3), 0.05)), Gripper((0, 0.25, 0.2)))
    assert left_right_qa(twin, *twin.objects) is None and closer_qa(twin, *twin.objects) is None


# ------------------------------------------------------------------ metrics


def test_spearman_and_summary():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.8944271909999159)  # ties: average ranks
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5])) and math.isnan(spearman([1], [1]))
    m = metric_summary([1.0, 1.0, 1.0, 1.0], [1.05, 1.8, 3.0, None])
    assert m["n"] == 4 and m["share_numeric"] == 0.75
    assert m["within_2x"] == 0.5 and m["within_10pct"] == 0.25
    assert m["median_rel_error"] == pytest.approx(0.8)

"""The geometric backend (spatial/geometric.py) behind the Estimator interface.

Numbers end to end use SceneTruthDetector, a DETECTOR STAND-IN that returns the synthetic scene's true
boxes (no real detector weights exist here); depth comes through the real depth-message decoding. The
real transformers path is tested with tiny random OWLv2 and Depth Anything checkpoints built offline:
loading, batching and output handling (their boxes and depths are random, so no accuracy there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from geometry_helpers import SceneTruthDetector, frame_from, within

from spatialvlm_ros.spatial.cross_check import cross_check_config, cross_check_report, other_backend
from spatialvlm_ros.spatial.distance_text import parse_distance
from spatialvlm_ros.spatial.estimator import (
    Frame,
    ModelConfig,
    ModelLoadError,
    SpatialQuery,
    build_estimator,
)
from spatialvlm_ros.spatial.geometric import Detection, GeometricEstimator
from spatialvlm_ros.spatial.synth.geometry_truth import object_truth, random_camera, random_visible_scene

TOPIC = ModelConfig(backend="geometric", depth_source="topic")


def q(kind: str, a: str, b: str = "") -> SpatialQuery:
    return SpatialQuery(kind, a, b, f"{kind} of {a} and {b}?")


class TrueDepthModel:
    """Depth model stand-in: hands back the depth it was given for each image (counts its calls)."""

    name = "true-depth (test stand-in)"

    def __init__(self, depths: dict[bytes, np.ndarray]) -> None:
        self.depths = depths
        self.calls: list[int] = []

    def predict(self, images):
        self.calls.append(len(images))
        return [self.depths[im.tobytes()] for im in images]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(21)
    return random_visible_scene(rng, (3, 3), gripper=True, camera=random_camera(rng, 320, 240),
                                gripper_distance=(0.2, 0.4))


@pytest.fixture
def detector(scene):
    det = SceneTruthDetector()
    det.register(scene[1])
    return det


def test_distance_gap_width_height_match_the_scene(scene, detector):
    sc, result = scene
    a, b, c = (o.description for o in sc.objects)
    est = GeometricEstimator(TOPIC, detector=detector)
    frame = frame_from(result, "16UC1")
    queries = [q("distance", a, b), q("gap_width", a, c), q("width", b), q("height", c),
               q("distance", "the robot gripper", a)]
    estimates = est.estimate([(frame, query) for query in queries])
    assert detector.calls == [1]  # one detector call for the frame, all descriptions at once
    dist, gap, width, height, gripper = estimates
    assert within(dist.value_m, sc.distance(a, b))
    assert within(gap.value_m, sc.gap(a, c).width_m)
    assert within(width.value_m, sc.find(b).width)
    assert within(height.value_m, sc.find(c).size[2])
    truth = object_truth(sc, "the robot gripper").centre
    assert within(gripper.value_m, float(np.linalg.norm(truth - sc.find(a).centre)))
    for e in estimates:
        assert e.reason is None and len(e.raw_answers) == 1
        # The answer speaks like the VLM: parse_distance reads it back within format_distance's 10 %.
        assert parse_distance(e.raw_answers[0]) == pytest.approx(e.value_m, rel=0.1)
        json.dumps(e.to_dict(), allow_nan=False)
    details = dist.details
    assert details["depth_source"] == "topic" and details["intrinsics"] == "camera_info"
    assert details["frame"] == "floor" and details["floor"]["inlier_share"] > 0.3
    assert details["closest_distance_m"] < details["centre_distance_m"] == pytest.approx(dist.value_m, abs=1e-4)
    true_a = sc.camera.world_to_camera(sc.find(a).centre)
    assert np.linalg.norm(np.array(details["objects"]["a"]["centre_m"]) - true_a) < 0.01
    assert gap.details["gap_width_m"] == pytest.approx(gap.value_m, abs=1e-4)
    assert dist.raw_answers[0].startswith(a[:1].upper() + a[1:] + " is ")


def test_both_depth_encodings_give_the_same_answer(scene, detector):
    sc, result = scene
    a, b = sc.objects[0].description, sc.objects[1].description
    est = GeometricEstimator(TOPIC, detector=detector)
    mm, metres = (est.estimate([(frame_from(result, enc), q("distance", a, b))])[0] for enc in ("16UC1", "32FC1"))
    assert mm.value_m == pytest.approx(metres.value_m, abs=0.002)
    assert within(metres.value_m, sc.distance(a, b))


def test_fallback_field_of_view_is_used_and_said(scene, detector):
    sc, result = scene
    a, b = sc.objects[0].description, sc.objects[1].description
    k = sc.camera.intrinsics
    hfov = float(np.degrees(2 * np.arctan(k.width / 2 / k.fx)))
    est = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic", fallback_hfov_deg=hfov),
                             detector=detector)
    (e,) = est.estimate([(frame_from(result, intrinsics=False), q("distance", a, b))])
    assert e.details["intrinsics"] == "fallback_fov" and "fallback_hfov_deg" in e.details["notes"][0]
    assert "assumed" in e.raw_answers[0]
    assert within(e.value_m, sc.distance(a, b))
    # camera_info of another resolution of the same camera is scaled, not replaced
    frame = frame_from(result)
    frame.intrinsics = sc.camera.scaled(640, 480).intrinsics
    (e,) = est.estimate([(frame, q("distance", a, b))])
    assert e.details["intrinsics"] == "camera_info_scaled" and within(e.value_m, sc.distance(a, b))


def test_bad_depth_is_refused_with_topic_and_replaced_by_the_model_with_auto(scene, detector):
    sc, result = scene
    a, b = sc.objects[0].description, sc.objects[1].description
    query = q("distance", a, b)
    shrunk = Frame(result.rgb, result.depth_m[:-10], result.camera.intrinsics)
    zeros = Frame(result.rgb, np.zeros_like(result.depth_m), result.camera.intrinsics)
    missing = Frame(result.rgb, None, result.camera.intrinsics)
    topic = GeometricEstimator(TOPIC, detector=detector)
    reasons = [e.reason for e in topic.estimate([(shrunk, query), (zeros, query), (missing, query)])]
    assert "not aligned" in reasons[0] and "no valid pixels" in reasons[1] and "no depth image" in reasons[2]
    assert all("depth_source is topic" in r for r in reasons)
    depth_model = TrueDepthModel({result.rgb.tobytes(): result.depth_m})
    auto = GeometricEstimator(ModelConfig(backend="geometric"), detector=detector, depth_model=depth_model)
    estimates = auto.estimate([(shrunk, query), (zeros, query), (missing, query)])
    assert depth_model.calls == [3]  # one batched call for the three frames
    for e in estimates:
        assert e.details["depth_source"] == "model" and "depth estimated by model.depth_model" in e.details["notes"][-1]
        assert within(e.value_m, sc.distance(a, b))
    # depth_source model ignores good topic depth
    model = GeometricEstimator(ModelConfig(backend="geometric", depth_source="model"), detector=detector,
                               depth_model=depth_model)
    (e,) = model.estimate([(frame_from(result), query)])
    assert e.details["depth_source"] == "model" and len(depth_model.calls) == 2


def test_object_not_found_and_same_box_are_answers_not_exceptions(scene, detector):
    sc, result = scene
    a, b, c = (o.description for o in sc.objects)
    frame = frame_from(result)
    box_a = detector.detect([result.rgb], [[a]])[0][a][0].box
    detector.extra = {"the purple unicorn": [Detection((1, 1, 5, 5), 0.05)],
                      "the same thing": [Detection(box_a, 0.5)],
                      "the lookalike": [Detection(box_a, 0.9), Detection(detector.detect([result.rgb], [[c]])[0][c][0].box, 0.4)]}
    est = GeometricEstimator(TOPIC, detector=detector)
    missing, nothing, same, resolved, alone = est.estimate([
        (frame, q("distance", a, "the purple unicorn")),
        (frame, q("gap_width", "the invisible man", b)),
        (frame, q("distance", a, "the same thing")),
        (frame, q("distance", a, "the lookalike")),
        (frame, q("width", "the purple unicorn")),
    ])
    assert missing.value_m is None and "'the purple unicorn' not found" in missing.reason
    assert "best box scored 0.05" in missing.reason
    assert nothing.value_m is None and "'the invisible man' not found" in nothing.reason
    assert same.value_m is None and "same object" in same.reason and "IoU 1.00" in same.reason
    # "the lookalike" prefers a's box, but a keeps it (score 1.0) and the lookalike's next box is c
    assert within(resolved.value_m, sc.distance(a, c))
    assert alone.value_m is None and "not found" in alone.reason
    for e in (missing, nothing, same, alone):
        assert e.raw_answers == [] and e.details["backend"] == "geometric"


def test_unusable_images_and_samples():
    est = GeometricEstimator(TOPIC, detector=SceneTruthDetector())
    (e,) = est.estimate([(Frame(np.zeros((10, 10), np.uint8), np.ones((10, 10), np.float32)),
                          q("distance", "a", "b"))])
    assert e.value_m is None and "bad image" in e.reason
    with pytest.raises(ValueError):
        est.estimate([], samples=0)
    assert est.estimate([]) == []


def test_geometric_config_is_validated():
    with pytest.raises(ValueError, match="depth_source"):
        ModelConfig(backend="geometric", depth_source="lidar")
    with pytest.raises(ValueError, match="detector_threshold"):
        ModelConfig(backend="geometric", detector_threshold=1.5)
    with pytest.raises(ValueError, match="model.detector is empty"):
        ModelConfig(backend="geometric", detector=" ")
    ModelConfig(backend="geometric", depth_source="topic", depth_model="")  # no depth model needed


def test_cross_check_helpers():
    assert other_backend("vlm") == "geometric" and other_backend("geometric") == "vlm"
    config = cross_check_config(ModelConfig(detector="x/y"))
    assert config.backend == "geometric" and config.detector == "x/y"
    report = cross_check_report(0.5, 0.4, "geometric", "m", raw_answers=["about 40 cm"])
    assert report["distance_m"] == 0.4 and report["ratio"] == pytest.approx(1.25) and report["error"] is None
    report = cross_check_report(0.5, None, "vlm", "m", key="gap_width_m", error="no distance")
    assert report["gap_width_m"] is None and report["ratio"] is None and report["error"] == "no distance"
    assert cross_check_report(None, 0.4, "vlm", "m")["ratio"] is None


# ------------------------------------------------------------------ tiny real checkpoints

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from spatialvlm_ros.tiny_models import build_tiny_depth_anything, build_tiny_owlv2

    root = tmp_path_factory.mktemp("tiny_geometric")
    return build_tiny_owlv2(root / "owlv2"), build_tiny_depth_anything(root / "depth_anything")


def test_tiny_checkpoints_load_through_build_estimator_and_answer_in_batches(tiny_dirs):
    owl, depth = tiny_dirs
    est = build_estimator(ModelConfig(backend="geometric", detector=str(owl), depth_model=str(depth),
                                      detector_threshold=0.0))
    assert type(est.detector).__name__ == "HFDetector" and est.detector.multi_query
    assert str(owl) in est.model_name and str(depth) in est.model_name
    rng = np.random.default_rng(0)
    big = Frame(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))  # no depth: the depth model runs
    small = Frame(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), np.full((60, 80), 1.5, np.float32))
    other = Frame(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    items = [(big, q("distance", "the red cube", "the blue cylinder")), (small, q("width", "the red cube")),
             (other, q("gap_width", "the red cube", "the green cube")), (big, q("height", "the blue cylinder"))]
    estimates = est.estimate(items)
    assert len(estimates) == 4
    sizes = {id(big): (128, 96), id(small): (80, 60), id(other): (128, 96)}
    for (frame, _), e in zip(items, estimates, strict=True):
        json.dumps(e.to_dict(), allow_nan=False)
        assert (e.value_m is None) == (e.reason is not None)
        w, h = sizes[id(frame)]
        for obj in (e.details or {}).get("objects", {}).values():
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and 0 <= obj["score"] <= 1
    assert estimates[1].details["depth_source"] == "topic"
    assert estimates[0].details["depth_source"] == "model"
    est.close()


def test_tiny_detector_and_depth_model_output_handling(tiny_dirs):
    from spatialvlm_ros.spatial.vision_models import MAX_CANDIDATES, HFDepthModel, HFDetector

    owl, depth = tiny_dirs
    detector = HFDetector(str(owl), device="cpu", max_batch_size=2)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((48, 64, 3), (64, 40, 3), (48, 64, 3))]
    descriptions = [["the red cube", "a very long description of a thing on the table"], ["the gripper"], []]
    found = detector.detect(images, descriptions)
    assert [sorted(f) for f in found] == [sorted(descriptions[0]), ["the gripper"], []]
    for image, per_image in zip(images, found, strict=True):
        h, w = image.shape[:2]
        for cands in per_image.values():
            assert 0 < len(cands) <= MAX_CANDIDATES
            assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
            for c in cands:
                assert 0 <= c.box[0] < c.box[2] <= w and 0 <= c.box[1] < c.box[3] <= h
    # one description per pass (the path Grounding DINO takes) reads the same boxes for a description
    detector.multi_query = False
    single = detector.detect(images[:1], [["the red cube"]])
    assert [c.box for c in single[0]["the red cube"]] == [c.box for c in found[0]["the red cube"]]
    model = HFDepthModel(str(depth), device="cpu", max_batch_size=2)
    depths = model.predict(images)
    assert [d.shape for d in depths] == [im.shape[:2] for im in images]
    assert all(d.dtype == np.float32 and np.isfinite(d).all() and (d > 0).all() for d in depths)


def test_checkpoint_problems_say_what_to_do(tiny_dirs, tmp_path):
    import shutil

    owl, depth = tiny_dirs
    with pytest.raises(ModelLoadError, match="not an existing directory"):
        build_estimator(ModelConfig(backend="geometric", detector="/no/such/detector", depth_source="topic"))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        build_estimator(ModelConfig(backend="geometric", detector="nobody/no-detector", depth_source="topic"))
    with pytest.raises(ModelLoadError, match="model.detector"):
        build_estimator(ModelConfig(backend="geometric", detector=str(depth), depth_source="topic"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        build_estimator(ModelConfig(backend="geometric", detector=str(tmp_path), depth_source="topic"))
    relative = tmp_path / "relative"
    shutil.copytree(depth, relative)
    config = json.loads((relative / "config.json").read_text())
    config["depth_estimation_type"] = "relative"
    (relative / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="relative depth"):
        build_estimator(ModelConfig(backend="geometric", detector=str(owl), depth_model=str(relative)))
    # depth_source topic loads no depth model at all, even a broken one
    est = build_estimator(ModelConfig(backend="geometric", detector=str(owl), depth_model=str(relative),
                                      depth_source="topic"))
    assert est.depth_model is None and "depth topic" in est.model_name

"""The geometric backend's promptable segmenter (``model.segmenter``): a tiny random SAM checkpoint built
offline and loaded through the same from_pretrained code users run, the segmenter stand-in (true masks a
few pixels off) for numbers end to end, and the failures: a checkpoint that is not a segmenter, a
segmenter object that is not one, a segmenter that fails or returns masks of the wrong size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from geometry_helpers import SceneTruthDetector, within

from spatialvlm_ros.spatial.estimator import Frame, ModelConfig, ModelLoadError, SpatialQuery, build_estimator
from spatialvlm_ros.spatial.geometric import GeometricEstimator
from spatialvlm_ros.spatial.synth.clutter import TrueMaskSegmenter, facing_width, random_cluttered_scene

TOPIC = ModelConfig(backend="geometric", depth_source="topic")


def q(kind: str, a: str, b: str = "") -> SpatialQuery:
    return SpatialQuery(kind, a, b, f"{kind} of {a} and {b}?")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from spatialvlm_ros.tiny_models import build_tiny_owlv2, build_tiny_sam

    root = tmp_path_factory.mktemp("tiny_segmenter")
    return build_tiny_sam(root / "sam"), build_tiny_owlv2(root / "owlv2")


@pytest.fixture(scope="module")
def scene():
    return random_cluttered_scene(np.random.default_rng(7))  # a validation-stream-like scene, own seed


def frame_of(result):
    return Frame(result.rgb, result.depth_m, result.scene.camera.intrinsics)


def queries(scene):
    a, b = (o.description for o in scene.objects[:2])
    return [q("gap_width", a, b), q("distance", a, b), q("width", a), q("height", b)]


def test_tiny_sam_loads_through_from_pretrained_and_runs_in_the_estimator(tiny, scene):
    sam, _ = tiny
    s, result, _ = scene
    detector = SceneTruthDetector()
    detector.register(result)
    config = ModelConfig(backend="geometric", depth_source="topic", segmenter=str(sam))
    estimator = GeometricEstimator(config, detector=detector)  # builds HFSegmenter from the directory
    assert type(estimator.segmenter).__name__ == "HFSegmenter" and str(sam) in estimator.model_name
    masks = estimator.segmenter.segment([result.rgb], [[(10.0, 20.0, 200.0, 300.0), (300.0, 100.0, 400.0, 200.0)]])
    assert len(masks[0]) == 2 and all(m.shape == result.rgb.shape[:2] and m.dtype == bool for m in masks[0])
    from spatialvlm_ros.spatial.vision_models import HFSegmenter

    half = HFSegmenter(str(sam), device="cpu", dtype="bfloat16")  # boxes follow the weights' dtype
    assert half.segment([result.rgb[:48, :64]], [[(1.0, 2.0, 30.0, 40.0)]])[0][0].shape == (48, 64)
    estimates = estimator.estimate([(frame_of(result), qq) for qq in queries(s)])
    for e in estimates:
        json.dumps(e.to_dict(), allow_nan=False)
        # Random weights give random masks: each answer is a number or says why not, never a crash.
        assert (e.value_m is None) == (e.reason is not None)
        for obj in (e.details or {}).get("objects", {}).values():
            assert obj["segmentation"]["mask_source"] == "segmenter"
    estimator.close()


def test_segmenter_stand_in_answers_as_well_as_true_masks(scene):
    s, result, _ = scene
    detector = SceneTruthDetector()
    detector.register(result)
    segmenter = TrueMaskSegmenter(max_px=2, seed=1)
    segmenter.register(result)
    estimator = GeometricEstimator(TOPIC, detector=detector, segmenter=segmenter)
    estimates = estimator.estimate([(frame_of(result), qq) for qq in queries(s)])
    gap, distance, width, height = estimates
    a, b = s.objects[:2]
    assert within(gap.value_m, s.gap(a, b).width_m) and gap.value_m > 0
    assert within(distance.value_m, s.distance(a, b))
    assert within(width.value_m, facing_width(a, s.camera))
    assert within(height.value_m, b.size[2])
    seg = gap.details["objects"]["a"]["segmentation"]
    assert seg["mask_source"] == "segmenter" and seg["pixels_in_mask"] > 0 and seg["points"] > 0
    assert {"floor_pixels_removed", "floor_share", "outlier_pixels_removed",
            "other_object_pixels_removed"} <= set(seg)
    # without a segmenter the details say the box alone was used
    plain = GeometricEstimator(TOPIC, detector=detector).estimate([(frame_of(result), queries(s)[0])])[0]
    assert plain.details["objects"]["a"]["segmentation"]["mask_source"] == "box"


def test_the_data_engines_view_of_a_frame_uses_the_segmenter_too(scene):
    # measure_objects (spatialvlm_synthesize's stage) goes through the same segmentation as answers.
    s, result, _ = scene
    detector = SceneTruthDetector()
    detector.register(result)
    segmenter = TrueMaskSegmenter(max_px=2, seed=1)
    segmenter.register(result)
    estimator = GeometricEstimator(TOPIC, detector=detector, segmenter=segmenter)
    names = [o.description for o in s.objects]
    (found,) = estimator.measure_objects([frame_of(result)], [names])
    assert found.problem is None and found.frame3d is not None and found.frame3d.on_floor
    assert sorted(m.description for m in found.objects) == sorted(names)
    for m in found.objects:
        truth = next(o for o in s.objects if o.description == m.description)
        assert m.problem is None and m.segmentation["mask_source"] == "segmenter"
        assert within(m.geometry.height_m, truth.size[2])
    plain = GeometricEstimator(TOPIC, detector=detector).measure_objects([frame_of(result)], [names])[0]
    assert {m.segmentation["mask_source"] for m in plain.objects} == {"box"}


class BrokenSegmenter:
    name = "broken (test stand-in)"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def segment(self, images, boxes):
        if self.mode == "raise":
            raise RuntimeError("CUDA error: device-side assert")
        if self.mode == "count":
            return [[] for _ in boxes]
        return [[np.ones((5, 5), bool) for _ in b] for b in boxes]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode,note", [("raise", "segmenter failed"), ("shape", "segmented from the box"),
                                       ("count", "masks for")])
def test_a_failing_segmenter_falls_back_to_box_segmentation_and_says_so(scene, mode, note):
    s, result, _ = scene
    detector = SceneTruthDetector()
    detector.register(result)
    estimator = GeometricEstimator(TOPIC, detector=detector, segmenter=BrokenSegmenter(mode))
    e = estimator.estimate([(frame_of(result), queries(s)[2])])[0]
    assert e.value_m is not None and within(e.value_m, facing_width(s.objects[0], s.camera))
    assert any(note in n for n in e.details["notes"])
    assert e.details["objects"]["a"]["segmentation"]["mask_source"] == "box"


def test_what_is_not_a_segmenter_is_refused_at_start_up(tiny):
    sam, owl = tiny
    with pytest.raises(TypeError, match="segment"):
        GeometricEstimator(TOPIC, detector=SceneTruthDetector(), segmenter=object())
    with pytest.raises(ModelLoadError, match="model.segmenter"):
        GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic", segmenter=str(owl)),
                           detector=SceneTruthDetector())
    with pytest.raises(ModelLoadError, match="not an existing directory"):
        GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic", segmenter="/no/such/sam"),
                           detector=SceneTruthDetector())
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic", segmenter="nobody/no-sam"),
                           detector=SceneTruthDetector())
    with pytest.raises(ValueError, match="model.segmenter is empty"):
        ModelConfig(backend="geometric", segmenter=" ")
    # the whole backend, as a node builds it: detector and segmenter from directories
    est = build_estimator(ModelConfig(backend="geometric", depth_source="topic", detector=str(owl),
                                      segmenter=str(sam)))
    assert type(est.segmenter).__name__ == "HFSegmenter"
    est.close()

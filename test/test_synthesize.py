"""spatialvlm_synthesize, the data engine: frames in, a spatial VQA dataset out, every answer checked.

Episodes of the second synthetic domain (``synth.domain``) are recorded through the real recorder_node
(``episode_player``) and synthesized through the command line's main(). Detection is a stand-in that
returns the renderer's true boxes (no detector weights exist offline); depth is the recorded 16UC1
depth, or, for the image folder, a depth-model stand-in returning the rendered depth. The truth of every
row comes from the scene definitions (``synth.vqa_truth``).
"""

from __future__ import annotations

import hashlib
import json
import math

import cv2
import numpy as np
import pytest

from spatialvlm_ros import synthesize as cli
from spatialvlm_ros.spatial.estimator import Frame, ModelConfig
from spatialvlm_ros.spatial.geometric import Detection, GeometricEstimator, MeasuredObject
from spatialvlm_ros.spatial.synth.domain import (
    DOMAIN_COLOURS,
    DOMAIN_SHAPES,
    CategoryTruthDetector,
    domain_episode,
)
from spatialvlm_ros.spatial.synth.vqa_truth import row_truth
from spatialvlm_ros.spatial.vqa.dataset import PROGRESS_DIR, read_table
from spatialvlm_ros.spatial.vqa.engine import Synthesizer, SynthesizeSettings
from spatialvlm_ros.spatial.vqa.naming import name_objects
from spatialvlm_ros.spatial.vqa.selection import FrameSelector
from spatialvlm_ros.spatial.vqa.templates import (
    KINDS,
    QUALITATIVE_KINDS,
    TemplateSettings,
    candidate_questions,
)

VOCABULARY = [f"{c} {s}" for c in DOMAIN_COLOURS for s in DOMAIN_SHAPES]


def _episodes(n: int, frames: int = 6, seed: int = 0):
    return [domain_episode(np.random.default_rng([seed, 50, i]), frames=frames, twins=(i == n - 1))
            for i in range(n)]


class TruthDepthModel:
    """DEPTH-MODEL STAND-IN: the rendered depth of frames it was shown (matched by their pixels)."""

    name = "rendered-depth (stand-in)"

    def __init__(self) -> None:
        self.known: dict[str, np.ndarray] = {}

    def register(self, result) -> None:
        self.known[hashlib.sha1(np.ascontiguousarray(result.rgb).tobytes()).hexdigest()] = result.depth_m

    def predict(self, images):
        return [self.known.get(hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest(),
                               np.zeros(im.shape[:2], np.float32)) for im in images]

    def close(self) -> None:
        pass


def _factory(episodes, depth_model=None, source="topic"):
    detector = CategoryTruthDetector()
    for e in episodes:
        for r in e.frames:
            detector.register(r)
            if depth_model is not None:
                depth_model.register(r)
    return lambda: GeometricEstimator(ModelConfig(backend="geometric", depth_source=source), detector=detector,
                                      depth_model=depth_model)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Three episodes (the last with two pink boxes... or another twin pair) recorded by recorder_node."""
    from spatialvlm_ros.episode_player import record_episodes

    episodes = _episodes(3)
    dirs = record_episodes(episodes, tmp_path_factory.mktemp("episodes"))
    return episodes, dirs


@pytest.fixture(scope="module")
def synthesized(recorded, tmp_path_factory):
    episodes, dirs = recorded
    out = tmp_path_factory.mktemp("vqa") / "set"
    code = cli.main([str(dirs[0].parent), "-o", str(out), "--objects", *VOCABULARY, "--no-progress",
                     "--batch-size", "4"], estimator_factory=_factory(episodes))
    assert code == cli.EXIT_OK
    return out, {d.name: e for d, e in zip(dirs, episodes, strict=True)}


# ------------------------------------------------------------------------------------------ stages

def test_frame_selection_rejects_blur_exposure_and_duplicates():
    ep = domain_episode(np.random.default_rng(3), frames=4, hold_frames=2)
    sel = FrameSelector()
    rgb = ep.frames[0].rgb
    assert sel.check(rgb) is None
    assert sel.check(ep.frames[1].rgb) == "duplicate"  # the camera held still
    assert sel.check(cv2.GaussianBlur(ep.frames[2].rgb, (0, 0), 4)) == "blurred"
    assert sel.check((rgb * 0.03).astype(np.uint8)) == "underexposed"
    assert sel.check(np.clip(rgb.astype(int) + 200, 0, 255).astype(np.uint8)) == "overexposed"
    assert sel.check(ep.frames[3].rgb) is None  # the camera moved
    assert dict(sel.counts) == {"kept": 2, "duplicate": 1, "blurred": 1, "underexposed": 1, "overexposed": 1}


def test_blur_is_also_judged_against_the_sources_own_sharpness():
    from spatialvlm_ros.spatial.vqa.selection import SelectionSettings

    ep = domain_episode(np.random.default_rng(4), frames=7, hold_frames=0)
    for relative, expected in ((0.5, "blurred"), (0.0, None)):
        sel = FrameSelector(SelectionSettings(min_sharpness=0.0, relative_sharpness=relative, min_change=0.0))
        assert all(sel.check(r.rgb) is None for r in ep.frames[:6])
        assert sel.check(cv2.GaussianBlur(ep.frames[6].rgb, (0, 0), 3)) == expected


def _measured(boxes_by_desc, frame_result):
    det = CategoryTruthDetector()
    det.register(frame_result)
    est = GeometricEstimator(ModelConfig(backend="geometric", depth_source="topic"), detector=det, depth_model=None)
    r = frame_result
    return est.measure_objects([Frame(r.rgb, r.depth_m, r.camera.intrinsics)], [boxes_by_desc])[0]


def test_twins_are_named_by_position_and_never_plainly():
    ep = domain_episode(np.random.default_rng(11), frames=1, twins=True)
    twin = ep.categories()[0]
    fo = _measured(ep.categories(), ep.frames[0])
    named, skipped = name_objects(fo.objects)
    twins = [o for o in named if o.description == twin]
    assert len([o for o in fo.objects if o.description == twin]) == 2
    # Either both named by side, or the nearer one by range, or the description left out with a reason.
    assert twins or twin in skipped
    plain = f"the {twin}"
    assert all(o.name != plain for o in twins)
    for o in twins:
        assert o.disambiguated_by in ("left", "right", "nearest")
    qs = candidate_questions(named, fo.frame3d, TemplateSettings(), np.random.default_rng(0))
    for q in (q for v in qs.values() for q in v):
        text = q.question.replace(f"{plain} nearest", "").replace(f"left {twin}", "").replace(f"right {twin}", "")
        assert plain not in text, q.question


def test_identical_twins_that_cannot_be_told_apart_are_not_named():
    ep = domain_episode(np.random.default_rng(5), frames=1)
    fo = _measured(ep.categories(), ep.frames[0])
    obj = fo.objects[0]
    # A second detection of the same description overlapping sideways at the same range: not nameable.
    x0, y0, x1, y1 = obj.detection.box
    twin = MeasuredObject(obj.description, Detection((x0 + 2, y0 - 30, x1 + 2, y1 - 30), 0.9), obj.geometry)
    named, skipped = name_objects([*fo.objects, twin])
    assert all(o.description != obj.description for o in named)
    assert "told apart" in skipped[f"the {obj.description}".lower()]


def test_templates_respect_margins_and_kinds():
    ep = domain_episode(np.random.default_rng(2), frames=1, n_objects=(4, 4))
    fo = _measured(ep.categories(), ep.frames[0])
    named, _ = name_objects(fo.objects)
    only = TemplateSettings(kinds=("left_right", "distance"), position_margin_m=10.0)
    qs = candidate_questions(named, fo.frame3d, only, np.random.default_rng(0))
    assert set(qs) == {"left_right", "distance"}
    assert qs["left_right"] == []  # nothing is 10 m to the side of anything
    assert len(qs["distance"]) == len(named) * (len(named) - 1) // 2
    with pytest.raises(ValueError, match="accepted"):
        TemplateSettings(kinds=("sideways",))


# ------------------------------------------------------------------------------------------ end to end

def test_every_synthesized_answer_matches_the_renderer(synthesized):
    out, by_name = synthesized
    rows = read_table(out).drop_columns(["image"]).to_pylist()
    assert len(rows) > 50
    kinds = {r["kind"] for r in rows}
    assert len(kinds) >= 10, kinds
    metric = [row_truth(r, by_name[r["source"]].frames[r["frame_index"]]) for r in rows if r["answer_type"] == "metres"]
    others = [(r, row_truth(r, by_name[r["source"]].frames[r["frame_index"]])) for r in rows
              if r["answer_type"] != "metres"]
    share = sum(t.right for t in metric) / len(metric)
    assert share >= 0.95, f"{share:.1%} of {len(metric)} quantitative values within [0.9x, 1.1x]"
    wrong = [r["question"] + " -> " + r["answer"] for r, t in others if not t.right]
    assert not wrong, wrong
    # Names in questions are unambiguous: no plain name of a description detected twice in the frame.
    for r in rows:
        descs = [o["description"] for o in r["objects"]]
        for o in r["objects"]:
            if o["disambiguated_by"]:
                assert o["name"] != f"the {o['description']}"
        assert len(descs) == len(r["objects"])


def test_dataset_round_trip_through_datasets(synthesized):
    import datasets

    out, _ = synthesized
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    table = read_table(out)
    assert len(ds) == table.num_rows
    row = ds[0]
    assert row["image"].size == (640, 480)  # decoded to PIL by the Image feature
    user, assistant = row["messages"]
    assert user["role"] == "user" and [c["type"] for c in user["content"]] == ["image", "text"]
    assert user["content"][1]["text"] == row["question"]
    assert assistant["content"][0]["text"] == row["answer"]
    assert row["source_kind"] == "episode" and row["depth_source"] == "topic"
    assert row["intrinsics_source"] == "camera_info" and row["measurement_frame"] == "floor"
    assert len(row["objects"][0]["box"]) == 4 and len(row["objects"][0]["centre_m"]) == 3
    assert len(set(ds["id"])) == len(ds)  # one row per question, no duplicates
    card = (out / "README.md").read_text()
    assert "spatialvlm_synthesize" in card and "frames seen" in card and "by kind" in card


def test_rerun_is_up_to_date_and_force_redoes(synthesized, recorded, capsys):
    out, _ = synthesized
    episodes, dirs = recorded
    before = read_table(out).column("id").to_pylist()
    capsys.readouterr()
    assert cli.main([str(dirs[0].parent), "-o", str(out), "--objects", *VOCABULARY, "--no-progress",
                     "--batch-size", "4"], estimator_factory=_factory(episodes)) == 0
    assert "(up to date)" in capsys.readouterr().out
    assert read_table(out).column("id").to_pylist() == before
    # Other settings on the same output: refused per source (exit 1), nothing mixed in.
    assert cli.main([str(dirs[0]), "-o", str(out), "--objects", *VOCABULARY, "--questions-per-frame", "3",
                     "--no-progress"], estimator_factory=_factory(episodes)) == cli.EXIT_FAILED
    assert "other settings" in capsys.readouterr().out


def test_interrupted_run_resumes_without_duplicates(recorded, tmp_path):
    episodes, dirs = recorded
    settings = SynthesizeSettings(objects=tuple(VOCABULARY), batch_size=2, progress=False)
    whole = Synthesizer(tmp_path / "whole", settings, _factory(episodes))
    whole.run(dirs[0])

    calls = {"n": 0}

    def stop_after_first(batch: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    part = Synthesizer(tmp_path / "part", settings, _factory(episodes), on_batch=stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        part.run(dirs[0])
    first = read_table(tmp_path / "part").num_rows
    assert 0 < first < read_table(tmp_path / "whole").num_rows
    # A shard whose progress file never got written (cut off between the two writes) is dropped.
    shard = next((tmp_path / "part" / "data").glob("*.parquet"))
    orphan = shard.with_name(shard.name.replace("000000", "000099"))
    orphan.write_bytes(shard.read_bytes())
    part.on_batch = None
    result = part.run(dirs[0])
    assert not orphan.exists()
    ids = read_table(tmp_path / "part").column("id").to_pylist()
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(read_table(tmp_path / "whole").column("id").to_pylist())
    assert result.counts["frames"] == len(episodes[0].frames)


def test_bad_bag_fails_alone(recorded, tmp_path, capsys):
    episodes, dirs = recorded
    bad = tmp_path / "episode_broken"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap}\n")
    (bad / "broken.mcap").write_bytes(b"\x89MCAP0\r\n" + b"garbage" * 50)
    code = cli.main([str(bad), str(dirs[1]), "-o", str(tmp_path / "out"), "--objects", *VOCABULARY,
                     "--no-progress"], estimator_factory=_factory(episodes))
    text = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert "episode_broken: FAILED" in text.out and "1 of 2 source(s) failed" in text.err
    assert read_table(tmp_path / "out").num_rows > 0  # the good episode is done


def test_no_vocabulary_and_bad_arguments(recorded, tmp_path, capsys):
    episodes, dirs = recorded
    assert cli.main([str(dirs[0]), "-o", str(tmp_path / "o"), "--no-target-object", "--no-progress"],
                    estimator_factory=_factory(episodes)) == cli.EXIT_FAILED
    assert "no objects to look for" in capsys.readouterr().out
    for bad in (["--kinds", "sideways"], ["--qualitative-share", "2"], ["--every", "0"]):
        with pytest.raises(SystemExit) as exc:
            cli.main([str(dirs[0]), "-o", str(tmp_path / "o"), *bad])
        assert exc.value.code == cli.EXIT_USAGE
    assert cli.main([str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == cli.EXIT_USAGE


def test_image_folder_without_depth_uses_the_depth_model_and_stated_fov(tmp_path):
    episodes = _episodes(1, frames=4, seed=7)
    ep = episodes[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, r in enumerate(ep.frames):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    (folder / "zz_broken.png").write_bytes(b"not a png")
    k = ep.frames[0].camera.intrinsics
    hfov = math.degrees(2 * math.atan(k.width / 2 / k.fx))
    depth = TruthDepthModel()
    out = tmp_path / "vqa"
    code = cli.main([str(folder), "-o", str(out), "--objects", *VOCABULARY, "--hfov-deg", f"{hfov:.4f}",
                     "--no-progress"], estimator_factory=_factory(episodes, depth, source="auto"))
    assert code == cli.EXIT_OK
    rows = read_table(out).drop_columns(["image"]).to_pylist()
    assert rows and {r["source_kind"] for r in rows} == {"image_folder"}
    assert {r["depth_source"] for r in rows} == {"model"} and {r["intrinsics_source"] for r in rows} == {"fallback_fov"}
    metric = [row_truth(r, ep.frames[r["frame_index"]]) for r in rows if r["answer_type"] == "metres"]
    assert sum(t.right for t in metric) / len(metric) >= 0.9
    logs = [json.loads(p.read_text()) for p in (out / PROGRESS_DIR).glob("*/*.json")]
    assert sum(log["counts"].get("undecodable", 0) for log in logs) == 1  # the broken PNG, named in counts


def test_kinds_cover_the_paper_list():
    assert set(QUALITATIVE_KINDS) == {"left_right", "above_below", "front_behind", "closer", "taller_shorter",
                                      "wider_thinner", "bigger_smaller"}
    assert {"distance", "horizontal_distance", "vertical_distance", "gap", "width", "height",
            "direction"} <= set(KINDS)


# ------------------------------------------------------------------------------------------ training on it

def test_split_is_by_episode_never_by_frame(synthesized):
    from spatialvlm_ros.training.vqa_data import load_vqa, split_by_source

    out, by_name = synthesized
    data = load_vqa([out])
    assert set(data.sources()) == set(by_name)
    train, held, names = split_by_source(data, 0.34)
    assert len(names) == 1 and held and train
    assert not {r.source for r in train} & {r.source for r in held}
    assert {r.source for r in held} == set(names)
    assert split_by_source(data, 0.34)[2] == names  # deterministic
    train2, held2, names2 = split_by_source(data, 0.0, heldout=sorted(by_name)[:2])
    assert names2 == sorted(by_name)[:2] and {r.source for r in train2} == {sorted(by_name)[2]}
    with pytest.raises(ValueError, match="not in the data"):
        split_by_source(data, 0.0, heldout=["episode_elsewhere"])


def test_scoring_uses_the_papers_measures(synthesized):
    from spatialvlm_ros.training.vqa_data import load_vqa
    from spatialvlm_ros.training.vqa_eval import score_rows

    rows = load_vqa([synthesized[0]]).rows
    right = score_rows(rows, [r.answer for r in rows])
    assert right["quantitative"]["within_10pct"] > 0.95 and right["quantitative"]["share_numeric"] == 1.0
    assert right["qualitative"]["accuracy"] == 1.0 and right["direction"]["accuracy"] == 1.0
    wrong = score_rows(rows, ["about 5 m" if r.answer_type == "metres" else
                              ("No." if r.answer == "Yes." else "Yes.") if r.answer_type == "yes_no" else
                              "At 6 o'clock." if r.answer == "At 12 o'clock." else "At 12 o'clock."
                              if r.answer_type == "clock" else "I don't know." for r in rows])
    assert wrong["quantitative"]["share_numeric"] == 1.0 and wrong["quantitative"]["within_2x"] == 0.0
    assert wrong["qualitative"]["accuracy"] == 0.0 and wrong["direction"]["accuracy"] == 0.0


def test_train_on_synthesized_data_evaluates_held_out_episodes(synthesized, tmp_path, capsys):
    from spatialvlm_ros import train

    out, by_name = synthesized
    held = sorted(by_name)[0]
    model = tmp_path / "model"
    assert train.main([str(model), "--init", "builtin:tiny-spatial", "--data", str(out), "--heldout", held,
                       "--steps", "2", "--batch-size", "4", "--synthetic-share", "0.5", "--quiet"]) == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["data_split"]["heldout_sources"] == [held]
    n_held = sum(1 for r in read_table(out, columns=["source"]).column("source").to_pylist() if r == held)
    assert metrics["before"]["n"] == metrics["after"]["n"] == n_held
    for name in ("before", "after"):
        assert {"share_numeric", "within_2x", "within_10pct"} <= set(metrics[name]["quantitative"])
        assert "accuracy" in metrics[name]["qualitative"]
    assert (model / "config.json").is_file()
    assert "held-out episodes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--init"):
        train.main([str(tmp_path / "m2"), "--data", str(out)])
    with pytest.raises(SystemExit, match="no spatialvlm_synthesize dataset|holds no"):
        train.main([str(tmp_path / "m3"), "--init", "builtin:tiny-spatial", "--data", str(tmp_path)])


def test_configured_backend_with_real_tiny_models_and_a_missing_one(tmp_path, capsys):
    """main() with the configured geometric backend (tiny random OWLv2, Depth Anything and SAM checkpoints,
    loaded by from_pretrained): it runs to the end; where the model runs (device) does not change the
    rows, a segmenter does (and the card says which); a missing model is exit 3."""
    from spatialvlm_ros.tiny_models import build_tiny_depth_anything, build_tiny_owlv2, build_tiny_sam

    owl, depth = build_tiny_owlv2(tmp_path / "owl"), build_tiny_depth_anything(tmp_path / "da")
    sam = build_tiny_sam(tmp_path / "sam")
    ep = _episodes(1, frames=2, seed=9)[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, r in enumerate(ep.frames):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR))
    common = [str(folder), "-o", str(tmp_path / "out"), "--objects", "pink box", "lime cylinder",
              "--min-change", "0", "--model.device", "cpu", "--no-progress", "--model.detector_threshold", "0"]
    models = ["--model.detector", str(owl), "--model.depth_model", str(depth)]
    assert cli.main([*common, *models]) == cli.EXIT_OK
    assert "photos: 2 frames, 2 kept" in capsys.readouterr().out
    assert (tmp_path / "out" / "README.md").is_file()
    assert cli.main([*common, *models, "--model.device", "auto", "--model.cpu_threads", "1"]) == cli.EXIT_OK
    assert "(up to date)" in capsys.readouterr().out
    assert cli.main([*common, *models, "--model.segmenter", str(sam)]) == cli.EXIT_FAILED
    assert "other settings (model)" in capsys.readouterr().out
    assert cli.main([*common, *models, "--model.segmenter", str(sam), "--force"]) == cli.EXIT_OK
    assert "photos: 2 frames, 2 kept (skipped: none), 2 measured" in capsys.readouterr().out
    assert f"model.segmenter {sam}" in (tmp_path / "out" / "README.md").read_text()
    assert cli.main([*common, "--force", "--model.detector", str(tmp_path / "no_such_model"),
                     "--model.depth_model", str(depth)]) == cli.EXIT_MODEL
    assert "could not be loaded" in capsys.readouterr().err

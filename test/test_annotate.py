"""spatialvlm_annotate: recorded episodes in, annotations.parquet and reward.png out; resumable, no duplicates.

One episode is recorded by the real recorder_node over real topics; the others are written with the
episodes core writer from CDR bytes (rclpy.serialization), which is faster. The tiny random Qwen2.5-VL
checkpoint answers where only the pipeline matters (its words are noise, so its distances are mostly
null); where the numbers matter (rewards, resumption, medians) a scripted stand-in for the model
answers in words, read by the real parsing path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image

from spatialvlm_ros import annotate as cli
from spatialvlm_ros.params import MODEL_PARAMS
from spatialvlm_ros.spatial.annotation import (
    ANNOTATIONS_FILE,
    PARTS_DIR,
    PLOT_FILE,
    AnnotateSettings,
    Annotator,
    read_annotations,
)
from spatialvlm_ros.spatial.episode_frames import EpisodeFailure, EpisodeTopics, choose_topics, iter_frames
from spatialvlm_ros.spatial.episodes import EpisodeWriter, TopicSpec
from spatialvlm_ros.spatial.estimator import Estimate, ModelConfig, build_estimator, combine_answers
from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
from spatialvlm_ros.spatial.metrics import spearman
from spatialvlm_ros.spatial.reward import RewardConfig
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

VENV_BIN = Path(sys.executable).parent
TARGET = "the orange tea bottle"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_TYPES = {
    "stamp_ns": pa.int64(), "frame_index": pa.int64(), "bag_time_ns": pa.int64(),
    "question": pa.string(), "raw_answers": pa.list_(pa.string()),
    "sample_distances_m": pa.list_(pa.float64()), "distance_m": pa.float64(), "error": pa.string(),
    "reward_negative_distance": pa.float64(), "reward_progress": pa.float64(), "details": pa.string(),
}


# ---------------------------------------------------------------------------------------------
# Episodes


def _stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


def write_episode(directory: Path, rgbs: list[np.ndarray], target: str = TARGET,
                  depths: list[np.ndarray] | None = None, period_ns: int = 100_000_000) -> Path:
    """An episode written by the episodes core writer: rgb8 images (+ 16UC1 depth, + camera_info).

    Depth and camera_info carry their frame's header stamp but are received after the image, as a
    camera driver's separate streams often are.
    """
    topics = [TopicSpec("/cam/image", "sensor_msgs/msg/Image")]
    if depths is not None:
        topics += [TopicSpec("/cam/depth", "sensor_msgs/msg/Image"),
                   TopicSpec("/cam/camera_info", "sensor_msgs/msg/CameraInfo")]
    writer = EpisodeWriter(directory, task="test", target_object=target)
    writer.open(topics)
    for i, rgb in enumerate(rgbs):
        stamp = 1_700_000_000_000_000_000 + i * period_ns
        image = Image(**rgb_to_image_fields(rgb))
        _stamp(image, stamp)
        assert writer.put("/cam/image", serialize_message(image), stamp + 1_000_000)
        if depths is not None:
            depth = Image(**metres_to_depth_fields(depths[i]))
            _stamp(depth, stamp)
            info = CameraInfo(width=rgb.shape[1], height=rgb.shape[0])
            info.k = [100.0 + i, 0.0, rgb.shape[1] / 2, 0.0, 100.0 + i, rgb.shape[0] / 2, 0.0, 0.0, 1.0]
            _stamp(info, stamp)
            assert writer.put("/cam/depth", serialize_message(depth), stamp + 3_000_000)
            assert writer.put("/cam/camera_info", serialize_message(info), stamp + 4_000_000)
    summary = writer.finalize("test done")
    assert summary.bag_readable and summary.error is None
    return directory


def numbered_frames(n: int, h: int = 24, w: int = 32) -> list[np.ndarray]:
    """Solid frames whose red value is their number (the stand-in reads it)."""
    return [np.full((h, w, 3), (i, 80, 120), np.uint8) for i in range(n)]


def approach_frames(n: int, w: int = 96, h: int = 72) -> tuple[list[np.ndarray], list[np.ndarray]]:
    scene = ApproachScene(width=w, height=h, frames=n)
    frames = [scene.render(i) for i in range(n)]
    return [f.rgb for f in frames], [f.depth_m for f in frames]


# ---------------------------------------------------------------------------------------------
# Estimators


class ScriptedWordsStandIn:
    """A scripted stand-in for the model (implements the Estimator protocol), for tests where numbers matter.

    Reads the frame's number from its red value and answers with ``answers[number]`` in words, which go
    through the real combine_answers / parse_distance path. ``fail`` maps a frame number to a model
    failure reason (answered once, then that frame gets its words); ``interrupt_on_call`` raises
    KeyboardInterrupt on that call (1-based), as Ctrl-C would.
    """

    backend = "vlm"
    model_name = "scripted stand-in for the model"

    def __init__(self, answers: dict[int, str], fail: dict[int, str] | None = None,
                 interrupt_on_call: int | None = None) -> None:
        self.answers = answers
        self.fail = dict(fail or {})
        self.interrupt_on_call = interrupt_on_call
        self.calls: list[list[int]] = []
        self.max_batch_size = 0

    def estimate(self, items, samples: int = 1) -> list[Estimate]:
        numbers = [int(frame.rgb[0, 0, 0]) for frame, _ in items]
        self.calls.append(numbers)
        if self.interrupt_on_call == len(self.calls):
            raise KeyboardInterrupt
        out = []
        for n, (_, query) in zip(numbers, items, strict=True):
            if n in self.fail:
                out.append(Estimate(query, None, reason=self.fail.pop(n)))
            else:
                out.append(combine_answers(query, [self.answers[n]] * samples))
        return out

    @property
    def frames_asked(self) -> list[int]:
        return [n for call in self.calls for n in call]

    def close(self) -> None:
        pass


class Capturing:
    """The real estimator, keeping what it was given (frames and batch sizes)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.backend, self.model_name = inner.backend, inner.model_name
        self.batches: list[int] = []
        self.frames: list = []

    @property
    def max_batch_size(self) -> int:
        return self.inner.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        self.inner.max_batch_size = value

    def estimate(self, items, samples: int = 1):
        self.batches.append(len(items))
        self.frames += [frame for frame, _ in items]
        return self.inner.estimate(items, samples)

    def close(self) -> None:
        pass  # shared by the module's tests


@pytest.fixture(scope="module")
def tiny_config(tiny_qwen_dir) -> ModelConfig:
    return ModelConfig(name_or_path=str(tiny_qwen_dir), max_new_tokens=6, device="cpu")


@pytest.fixture(scope="module")
def tiny_estimator(tiny_config):
    estimator = build_estimator(tiny_config)
    yield estimator
    estimator.close()


def model_values(config: ModelConfig) -> dict:
    return {spec.name: getattr(config, spec.name[len("model."):]) for spec in MODEL_PARAMS}


STAND_IN_MODEL = {"model.backend": "vlm", "model.name_or_path": "scripted stand-in"}


def settings(**kw) -> AnnotateSettings:
    kw.setdefault("model", STAND_IN_MODEL)
    kw.setdefault("progress", False)
    return AnnotateSettings(**kw)


def table_of(directory: Path) -> pa.Table:
    return pq.read_table(directory / ANNOTATIONS_FILE)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with PILImage.open(path) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 300
        img.verify()


# ---------------------------------------------------------------------------------------------
# An episode recorded by recorder_node over real topics


@pytest.fixture(scope="module")
def recorded_episode(tmp_path_factory) -> tuple[Path, list[int], list[np.ndarray], list[float]]:
    """recorder_node records a camera (image, depth, camera_info) published over real topics."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_srvs.srv import SetBool

    from spatialvlm_ros.recorder_node import RecorderNode

    n = 5
    rgbs, depths = approach_frames(n)
    scene = ApproachScene(width=96, height=72, frames=n)
    out = tmp_path_factory.mktemp("recorded")
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)  # as recorder_node's main() spins it
    recorder = RecorderNode(namespace="/annotate_test", context=context, parameter_overrides=[
        Parameter("output_dir", value=str(out)), Parameter("topic_discovery_period_s", value=0.1),
        Parameter("target_object", value=scene.target_description),
        Parameter("topics", value=["image", "depth", "camera_info"])])
    camera = Node("annotate_test_camera", namespace="/annotate_test", context=context)
    # Reliable and transient-local: the recorder matches that, so a reader that matches a moment
    # late still gets every frame from the publisher's history.
    qos = QoSProfile(depth=n, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {name: camera.create_publisher(Image if name != "camera_info" else CameraInfo, name, qos)
            for name in ("image", "depth", "camera_info")}
    record = camera.create_client(SetBool, "record")
    for node in (recorder, camera):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()

    def call(start: bool) -> SetBool.Response:
        assert record.wait_for_service(timeout_sec=20)
        future = record.call_async(SetBool.Request(data=start))
        deadline = time.monotonic() + 20
        while not future.done():
            assert time.monotonic() < deadline, "record service did not answer"
            time.sleep(0.01)
        return future.result()

    try:
        deadline = time.monotonic() + 20
        while any(p.get_subscription_count() < 1 for p in pubs.values()):
            assert time.monotonic() < deadline, "recorder never subscribed"
            time.sleep(0.02)
        started = call(True)
        assert started.success, started.message
        stamps = []
        for i in range(n):
            stamp = 1_700_000_000_000_000_000 + i * 33_000_000
            image = Image(**rgb_to_image_fields(rgbs[i]))
            depth = Image(**metres_to_depth_fields(depths[i]))
            info = CameraInfo(width=96, height=72)
            k = scene.intrinsics
            info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
            for msg in (image, depth, info):
                _stamp(msg, stamp)
            pubs["camera_info"].publish(info)
            pubs["image"].publish(image)
            pubs["depth"].publish(depth)
            stamps.append(stamp)
        deadline = time.monotonic() + 20
        while set(recorder.episode.accepted_counts().values()) != {n}:
            assert time.monotonic() < deadline, recorder.episode.accepted_counts()
            time.sleep(0.02)
        stopped = call(False)
        assert stopped.success, stopped.message
    finally:
        recorder.close()
        executor.shutdown(timeout_sec=5)
        for node in (recorder, camera):
            node.destroy_node()
        rclpy.shutdown(context=context)
    return Path(stopped.message), stamps, depths, [k.fx]


def test_recorded_episode_annotated_with_the_tiny_checkpoint(recorded_episode, tiny_estimator,
                                                              tiny_config, tmp_path) -> None:
    episode, stamps, depths, (fx,) = recorded_episode
    estimator = Capturing(tiny_estimator)
    annotator = Annotator(settings(model=model_values(tiny_config), batch_size=2,
                                   output_dir=tmp_path), lambda: estimator)
    result = annotator.annotate(episode)

    out = tmp_path / episode.name
    table, meta = read_annotations(out)
    assert {n: table.schema.field(n).type for n in table.column_names} == EXPECTED_TYPES
    assert table.column_names[:2] == ["stamp_ns", "frame_index"]
    rows = table.to_pylist()
    assert [r["frame_index"] for r in rows] == list(range(5))
    assert [r["stamp_ns"] for r in rows] == stamps  # the source images' header stamps
    assert all(r["bag_time_ns"] > 0 for r in rows)
    assert {r["question"] for r in rows} == {
        "How far is the robot gripper from the orange cylinder? Answer with a distance in metres."}
    for r in rows:  # one raw answer per frame; a distance, or null with the reason
        assert len(r["raw_answers"]) == 1 and len(r["sample_distances_m"]) == 1
        assert (r["distance_m"] is None) == (r["error"] is not None)
        assert (r["distance_m"] is None) == (r["reward_negative_distance"] is None)
    assert estimator.batches == [2, 2, 1]
    # Depth and intrinsics reach the estimator as in the live nodes, each frame with its own depth.
    for frame, depth in zip(estimator.frames, depths, strict=True):
        assert frame.rgb.shape == (72, 96, 3) and frame.intrinsics.fx == pytest.approx(fx)
        assert np.nanmean(frame.depth_m) == pytest.approx(np.nanmean(depth), abs=1e-3)
    assert meta["target_object"] == "the orange cylinder" and meta["episode"] == episode.name
    assert meta["model"]["model.name_or_path"] == tiny_config.name_or_path
    assert table.schema.metadata[b"model.backend"] == b"vlm"
    assert result.frames == result.annotated == result.new == 5
    assert_png(out / PLOT_FILE)
    assert not (out / PARTS_DIR).exists()
    assert not any(p.name in (ANNOTATIONS_FILE, PLOT_FILE) for p in episode.iterdir())  # --output


def test_batch_size_and_every_with_the_tiny_checkpoint(tiny_estimator, tiny_config, tmp_path) -> None:
    rgbs, depths = approach_frames(7, w=64, h=48)
    episode = write_episode(tmp_path / "ep", rgbs, depths=depths)
    tables = {}
    for batch_size in (1, 4):
        estimator = Capturing(tiny_estimator)
        out = tmp_path / f"bs{batch_size}"
        Annotator(settings(model=model_values(tiny_config), batch_size=batch_size, output_dir=out),
                  lambda e=estimator: e).annotate(episode)
        assert estimator.batches == ([1] * 7 if batch_size == 1 else [4, 3])
        tables[batch_size] = table_of(out / "ep").drop_columns(["details"])
    # The model is deterministic (greedy): batching changes throughput, not answers.
    assert tables[1].to_pylist() == tables[4].to_pylist()

    estimator = Capturing(tiny_estimator)
    Annotator(settings(model=model_values(tiny_config), every=3, output_dir=tmp_path / "every"),
              lambda: estimator).annotate(episode)
    assert table_of(tmp_path / "every" / "ep").column("frame_index").to_pylist() == [0, 3, 6]
    assert [f.rgb[0, 0].tolist() for f in estimator.frames] == [rgbs[i][0, 0].tolist() for i in (0, 3, 6)]


def test_shipped_model_annotates_an_approach_with_distances_that_track_the_truth(tmp_path) -> None:
    """The demo camera's approach at 640x480, recorded, then annotated by the shipped tiny spatial model:
    every frame gets a distance, the distances rank the frames as the true ones do, and the rewards
    follow them."""
    n = 12
    scene = ApproachScene(frames=n)
    frames = [scene.render(i) for i in range(n)]
    episode = write_episode(tmp_path / "ep", [f.rgb for f in frames], target=scene.target_description,
                            depths=[f.depth_m for f in frames])
    config = ModelConfig(name_or_path="builtin:tiny-spatial", max_new_tokens=16, device="cpu")
    estimator = build_estimator(config)
    try:
        result = Annotator(settings(model=model_values(config), batch_size=4, output_dir=tmp_path / "out"),
                           lambda: estimator).annotate(episode)
    finally:
        estimator.close()
    assert result.annotated == n
    rows = table_of(tmp_path / "out" / "ep").to_pylist()
    distances = [r["distance_m"] for r in rows]
    assert None not in distances, [r["raw_answers"] for r in rows]
    truth = [f.true_distance_m for f in frames]
    assert spearman(truth, distances) >= 0.9, list(zip(truth, distances, strict=True))
    assert [r["reward_negative_distance"] for r in rows] == pytest.approx([-d for d in distances])
    assert rows[-1]["reward_progress"] is not None


# ---------------------------------------------------------------------------------------------
# Rewards and resumption (numbers matter: the scripted stand-in answers)

DISTANCES = [0.60, 0.55, 0.50, 0.46, None, 0.40, 0.35, None, 0.25, 0.20]


def stand_in(**kw) -> ScriptedWordsStandIn:
    return ScriptedWordsStandIn(
        {i: "I cannot tell." if d is None else f"The gripper is about {d * 100:.0f} cm away."
         for i, d in enumerate(DISTANCES)}, **kw)


def expected_rewards(scale: float = 1.0) -> tuple[list, list]:
    negative, progress, previous = [], [], None
    for d in DISTANCES:
        negative.append(None if d is None else -scale * d)
        if d is None:
            progress.append(None)
            continue
        progress.append(0.0 if previous is None else scale * (previous - d))
        previous = d
    return negative, progress


def assert_rewards(table: pa.Table, scale: float = 1.0) -> None:
    negative, progress = expected_rewards(scale)
    assert table.column("distance_m").to_pylist() == pytest.approx(DISTANCES)
    assert table.column("reward_negative_distance").to_pylist() == pytest.approx(negative)
    assert table.column("reward_progress").to_pylist() == pytest.approx(progress)


class Interrupted(Exception):
    pass


def test_rewards_over_the_whole_episode_after_an_interrupted_run(tmp_path) -> None:
    episode = write_episode(tmp_path / "ep", numbered_frames(10))

    def interrupt(path: Path, rows: int) -> None:
        raise Interrupted(f"killed after {path.name}")

    first = stand_in()
    s = settings(batch_size=3, checkpoint_every=3)
    with pytest.raises(Interrupted):
        Annotator(s, lambda: first, on_part=interrupt).annotate(episode)
    parts = list((episode / PARTS_DIR).glob("part-*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).column("frame_index").to_pylist() == [0, 1, 2]
    assert not (episode / ANNOTATIONS_FILE).exists()

    second = stand_in()
    result = Annotator(s, lambda: second).annotate(episode)
    assert second.frames_asked == list(range(3, 10))  # the saved frames are not asked again
    table = table_of(episode)
    assert table.column("frame_index").to_pylist() == list(range(10))  # all there, none twice
    # progress at frame 3 compares with frame 2 of the first run: rewards are computed at the end.
    assert_rewards(table)
    assert table.column("error").to_pylist()[4] == "no distance in the model's answer: 'I cannot tell.'"
    assert table.column("raw_answers").to_pylist()[5] == ["The gripper is about 40 cm away."]
    assert (result.frames, result.annotated, result.new, result.with_distance) == (10, 10, 7, 8)
    assert result.median_distance_m == pytest.approx(0.43)
    assert not (episode / PARTS_DIR).exists()
    assert_png(episode / PLOT_FILE)


def test_ctrl_c_mid_run_keeps_the_answered_frames(tmp_path) -> None:
    episode = write_episode(tmp_path / "ep", numbered_frames(10))
    first = stand_in(interrupt_on_call=3)
    s = settings(batch_size=4, checkpoint_every=1000)  # nothing would be written before the end
    with pytest.raises(KeyboardInterrupt):
        Annotator(s, lambda: first).annotate(episode)
    second = stand_in()
    Annotator(s, lambda: second).annotate(episode)
    assert second.frames_asked == [8, 9]
    assert table_of(episode).column("frame_index").to_pylist() == list(range(10))
    assert_rewards(table_of(episode))


def test_rerun_is_a_no_op_force_recomputes_and_failed_frames_are_retried(tmp_path) -> None:
    episode = write_episode(tmp_path / "ep", numbered_frames(10))
    first = stand_in(fail={6: "model failed: CUDA out of memory"})
    Annotator(settings(batch_size=4), lambda: first).annotate(episode)
    assert table_of(episode).column("error").to_pylist()[6] == "model failed: CUDA out of memory"

    retry = stand_in()
    Annotator(settings(batch_size=4), lambda: retry).annotate(episode)
    assert retry.frames_asked == [6]  # only the frame the model failed on
    assert_rewards(table_of(episode))
    before = {name: (episode / name).stat().st_mtime_ns for name in (ANNOTATIONS_FILE, PLOT_FILE)}
    rows = table_of(episode).to_pylist()

    def no_model():
        raise AssertionError("a run with nothing to do must not load the model")

    result = Annotator(settings(batch_size=4), no_model).annotate(episode)
    assert result.up_to_date and result.new == 0 and result.annotated == 10
    assert {n: (episode / n).stat().st_mtime_ns for n in before} == before
    assert table_of(episode).to_pylist() == rows

    # New shaping settings: rewards are recomputed from the stored distances, without the model.
    Annotator(settings(shaping=RewardConfig(scale=2.0)), no_model).annotate(episode)
    assert_rewards(table_of(episode), scale=2.0)

    # Another question must not be mixed in: refused, then recomputed with force.
    with pytest.raises(EpisodeFailure, match="other settings.*--force"):
        Annotator(settings(target_object="the green cup"), no_model).annotate(episode)
    forced = stand_in()
    Annotator(settings(target_object="the green cup", force=True), lambda: forced).annotate(episode)
    assert forced.frames_asked == list(range(10))
    table = table_of(episode)
    assert table.num_rows == 10 and "the green cup" in table.column("question")[0].as_py()


def test_corrupt_bag_and_missing_target_are_clear_errors(tmp_path) -> None:
    broken = write_episode(tmp_path / "broken", numbered_frames(10))
    mcap = next(broken.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    with pytest.raises(EpisodeFailure, match="cannot read the bag"):
        Annotator(settings(), stand_in).annotate(broken)

    untargeted = write_episode(tmp_path / "untargeted", numbered_frames(2), target="")
    with pytest.raises(EpisodeFailure, match="no target object: episode.yaml has no target_object "
                                             "and no --target was given"):
        Annotator(settings(), stand_in).annotate(untargeted)
    Annotator(settings(target_object=TARGET), stand_in).annotate(untargeted)  # --target is enough
    assert table_of(untargeted).num_rows == 2


def test_bad_frames_are_rows_with_the_reason(tmp_path) -> None:
    episode = write_episode(tmp_path / "ep", numbered_frames(3))
    writer_dir = tmp_path / "bad"
    writer = EpisodeWriter(writer_dir, target_object=TARGET)
    writer.open([TopicSpec("/image", "sensor_msgs/msg/Image")])
    for i, raw in enumerate(read_raw(episode)):
        if i == 1:  # wrong step for its size: refused by the decoder, never guessed at
            msg = Image(height=24, width=32, encoding="rgb8", step=10, data=b"\0" * 240)
            raw = serialize_message(msg)
        writer.put("/image", raw, 1000 + i)
    writer.finalize()
    stand = stand_in()
    Annotator(settings(), lambda: stand).annotate(writer_dir)
    rows = table_of(writer_dir).to_pylist()
    assert [r["distance_m"] for r in rows] == pytest.approx([0.60, None, 0.50])
    assert rows[1]["error"].startswith("bad image: step 10 < width*3=96")
    assert stand.frames_asked == [0, 2]


def read_raw(episode: Path) -> list[bytes]:
    from spatialvlm_ros.spatial.episodes import read_episode

    return [m.rawdata for m in read_episode(episode)]


# ---------------------------------------------------------------------------------------------
# Frames out of the bag, topic choice


def test_depth_and_camera_info_are_matched_by_header_stamp(tmp_path) -> None:
    rgbs = numbered_frames(4)
    depths = [np.full((24, 32), 0.1 * (i + 1), np.float32) for i in range(4)]
    episode = write_episode(tmp_path / "ep", rgbs, depths=depths)
    frames = list(iter_frames(episode, "/cam/image", "/cam/depth", "/cam/camera_info",
                              wanted=lambda i: i != 2))
    assert [f.frame_index for f in frames] == [0, 1, 3]
    for record in frames:  # received after the image, but stamped like it: its own depth
        i = record.frame_index
        assert np.nanmean(record.frame.depth_m) == pytest.approx(0.1 * (i + 1), abs=1e-3)
        assert record.frame.intrinsics.fx == 100.0 + i
        assert record.error is None and record.depth_note is None


def test_default_topics_follow_the_recording() -> None:
    def topics(**types) -> EpisodeTopics:
        names = {k.replace("__", "/"): v for k, v in types.items()}
        return EpisodeTopics({"/" + k: v for k, v in names.items()}, {"/" + k: 1 for k in names})

    img, cimg, info = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo"
    recorder = topics(rec__image=img, rec__depth=img, rec__camera_info=info,
                      rec__joint_states="sensor_msgs/msg/JointState")
    assert choose_topics(recorder, None, None, None) == ("/rec/image", "/rec/depth", "/rec/camera_info")
    assert choose_topics(recorder, "image", "", "") == ("/rec/image", None, None)
    driver = topics(camera__color__image_raw=img, camera__color__camera_info=info,
                    camera__aligned_depth_to_color__image_raw=img)
    assert choose_topics(driver, None, None, None) == (
        "/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw", "/camera/color/camera_info")
    compressed = topics(cam__image__compressed=cimg)
    assert choose_topics(compressed, None, None, None) == ("/cam/image/compressed", None, None)
    two = topics(left__rgb=img, right__rgb=img)
    with pytest.raises(EpisodeFailure, match="several image topics.*--image-topic"):
        choose_topics(two, None, None, None)
    assert choose_topics(two, "right/rgb", None, None)[0] == "/right/rgb"
    with pytest.raises(EpisodeFailure, match="'rgb' matches several topics"):
        choose_topics(two, "rgb", None, None)
    with pytest.raises(EpisodeFailure, match="has no image topic"):
        choose_topics(topics(joint_states="sensor_msgs/msg/JointState"), None, None, None)


# ---------------------------------------------------------------------------------------------
# The command line


def test_options_are_generated_from_the_parameter_specs() -> None:
    parser = cli.build_parser()
    args = vars(parser.parse_args(["ep"]))
    for spec in MODEL_PARAMS:
        assert args[spec.name] == spec.default, spec.name
    args = vars(parser.parse_args(["ep", "--model", "/m", "--model.dtype", "float16", "--samples", "3",
                                   "--model.trust_remote_code", "--reward.scale", "2"]))
    assert (args["model.name_or_path"], args["model.dtype"], args["samples_per_frame"]) == ("/m", "float16", 3)
    assert args["model.trust_remote_code"] is True and args["reward.scale"] == 2.0
    assert args["reward.modes"] == ["negative_distance", "progress"]
    for bad in (["--model.dtype", "float8"], ["--samples", "99"], ["--every", "0"],
                ["--question-template", "How far is {gripper}?"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["ep", *bad])
        assert exit_info.value.code == cli.EXIT_USAGE


def test_cli_needs_neither_ros_nor_torch_to_start(tmp_path) -> None:
    code = ("import sys; from spatialvlm_ros import annotate; import spatialvlm_ros.spatial.annotation\n"
            "rc = annotate.main([sys.argv[1]])\n"
            "assert 'rclpy' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    assert "missing does not exist" in proc.stderr


def test_console_script_annotates_a_folder_and_names_the_failures(tiny_qwen_dir, tmp_path,
                                                                  monkeypatch) -> None:
    folder = tmp_path / "episodes"
    rgbs, depths = approach_frames(3, w=64, h=48)
    write_episode(folder / "a_good", rgbs, depths=depths)
    broken = write_episode(folder / "b_truncated", numbered_frames(4))
    mcap = next(broken.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size - 200)
    write_episode(folder / "c_no_target", numbered_frames(2), target="")
    options = ["--model", str(tiny_qwen_dir), "--model.max_new_tokens", "4", "--model.device", "cpu"]
    command = [str(VENV_BIN / "spatialvlm_annotate"), str(folder), *options, "--batch-size", "2"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == cli.EXIT_FAILED, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert lines[0].startswith("a_good: 3 frames, 3 annotated (3 new), ")
    assert lines[0].endswith(str(folder / "a_good" / ANNOTATIONS_FILE))
    assert lines[1].startswith("b_truncated: FAILED: cannot read the bag: ")
    assert lines[2].startswith("c_no_target: FAILED: no target object")
    assert "2 of 3 episode(s) failed: b_truncated, c_no_target" in proc.stderr
    assert table_of(folder / "a_good").num_rows == 3
    assert_png(folder / "a_good" / PLOT_FILE)
    # The good one alone, again: up to date, exit 0, the model is not even loaded.
    def no_model(config):
        raise AssertionError("a run with nothing to do must not load the model")

    monkeypatch.setattr("spatialvlm_ros.spatial.estimator.build_estimator", no_model)
    assert cli.main([str(folder / "a_good"), *options]) == cli.EXIT_OK

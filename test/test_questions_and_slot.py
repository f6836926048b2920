"""Question templates, the newest-frame-wins slot and its worker, and the synthetic approach scene."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from spatialvlm_ros.spatial.estimator import SpatialQuery
from spatialvlm_ros.spatial.fifo import FrameFifo, make_handoff
from spatialvlm_ros.spatial.latest import LatestSlot, Worker
from spatialvlm_ros.spatial.questions import (
    DEFAULT_DISTANCE_TEMPLATE,
    DISTANCE_FIELDS,
    check_template,
    distance_query,
)
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

# ------------------------------------------------------------------ question templates


def test_default_template_fills_both_fields():
    q = distance_query(DEFAULT_DISTANCE_TEMPLATE, " the robot gripper ", "the orange tea bottle  ")
    assert q == SpatialQuery(
        "distance", "the robot gripper", "the orange tea bottle",
        "How far is the robot gripper from the orange tea bottle? Answer with a distance in metres.")


def test_custom_template_may_omit_the_gripper_and_repeat_the_target():
    q = distance_query("Distance to {target}? ({target}, metres)", "gripper", "the mug")
    assert q.text == "Distance to the mug? (the mug, metres)"
    assert check_template("Distance to {target}?", DISTANCE_FIELDS, required=("target",)) is None


@pytest.mark.parametrize("template, unknown", [
    ("How far is {gripper} from {object}?", "object"),
    ("How far is {robot} from {target}?", "robot"),
    ("How far is {gripper} from {target.name}?", "target.name"),
])
def test_unknown_field_is_refused_naming_the_accepted_fields(template, unknown):
    with pytest.raises(ValueError) as info:
        distance_query(template, "gripper", "bottle")
    msg = str(info.value)
    assert f"unknown field(s) {{{unknown}}}" in msg and "accepted: {gripper}, {target}" in msg


def test_positional_field_is_refused():
    with pytest.raises(ValueError, match="accepted: {gripper}, {target}"):
        distance_query("How far is {} from {target}?", "gripper", "bottle")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \{\}"):
        distance_query("How far is {} from {target}?", "gripper", "bottle")


def test_missing_target_is_refused():
    with pytest.raises(ValueError) as info:
        distance_query("How far is {gripper} from the thing?", "gripper", "bottle")
    assert "must contain {target}" in str(info.value)


@pytest.mark.parametrize("template", ["How far is {gripper} from {target?", "How far} is {target}?",
                                      "{target} {"])
def test_malformed_braces_are_refused(template):
    with pytest.raises(ValueError) as info:
        distance_query(template, "gripper", "bottle")
    assert "is not a valid format string" in str(info.value) and template in str(info.value)


@pytest.mark.parametrize("target", ["", "   ", "\t\n"])
def test_empty_target_is_refused(target):
    with pytest.raises(ValueError, match="target_object must not be empty"):
        distance_query(DEFAULT_DISTANCE_TEMPLATE, "gripper", target)


def test_query_checks_kind_and_text():
    with pytest.raises(ValueError, match="accepted: distance, gap_width, width, height"):
        SpatialQuery("volume", "a", "b", "How big?")
    with pytest.raises(ValueError, match="question text"):
        SpatialQuery("distance", "a", "b", "  ")


# ------------------------------------------------------------------ LatestSlot


def test_newest_item_wins_and_replaced_items_are_counted():
    slot: LatestSlot[int] = LatestSlot()
    for i in range(1, 4):
        slot.put(i)
    assert slot.peek() == 3
    assert slot.take(timeout=0) == 3
    assert (slot.dropped, slot.accepted) == (2, 3)
    slot.put(4)
    assert slot.take(timeout=0) == 4
    assert (slot.dropped, slot.accepted) == (2, 4)  # a taken item is not dropped
    assert slot.peek() is None


def test_take_times_out_with_none():
    slot: LatestSlot[int] = LatestSlot()
    start = time.monotonic()
    assert slot.take(timeout=0.1) is None
    assert 0.09 <= time.monotonic() - start < 2.0


def test_put_wakes_a_blocked_take():
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    taker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    taker.start()
    time.sleep(0.05)
    slot.put("frame")
    taker.join(2)
    assert not taker.is_alive() and got == ["frame"]


def test_close_wakes_a_blocked_take():
    slot: LatestSlot[int] = LatestSlot()
    got: list[int | None] = []
    # A long timeout rather than none, so a close() that wakes nobody fails the test instead of hanging it.
    taker = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    taker.start()
    time.sleep(0.05)
    assert taker.is_alive() and not slot.closed
    start = time.monotonic()
    slot.close()
    taker.join(2)
    assert not taker.is_alive() and got == [None] and slot.closed
    assert time.monotonic() - start < 1.0


def test_put_returns_the_item_it_replaced_and_drain_empties():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 will never be handled: the caller answers for it
    assert slot.drain() == [2] and slot.drain() == [] and slot.peek() is None


# ------------------------------------------------------------------ FrameFifo (frame_policy every)


def test_fifo_keeps_every_item_in_order_and_refuses_beyond_capacity():
    fifo: FrameFifo[int] = FrameFifo(3)
    assert [fifo.put(i) for i in range(1, 4)] == [None, None, None]
    assert fifo.put(4) == 4 and fifo.put(5) == 5  # refused: handed back, counted, not queued
    assert (fifo.dropped, fifo.accepted, len(fifo)) == (2, 3, 3)
    assert [fifo.take(timeout=0) for _ in range(3)] == [1, 2, 3]
    assert fifo.take(timeout=0.05) is None
    assert fifo.put(6) is None  # room again
    assert fifo.drain() == [6] and len(fifo) == 0


def test_fifo_close_wakes_a_blocked_take_and_bad_capacity_is_refused():
    fifo: FrameFifo[int] = FrameFifo(1)
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(fifo.take(timeout=5)))
    taker.start()
    time.sleep(0.05)
    fifo.close()
    taker.join(2)
    assert not taker.is_alive() and got == [None] and fifo.closed
    with pytest.raises(ValueError, match="at least 1"):
        FrameFifo(0)


def test_make_handoff_by_frame_policy():
    assert isinstance(make_handoff("newest", 5), LatestSlot)
    fifo = make_handoff("every", 5)
    assert isinstance(fifo, FrameFifo) and fifo.capacity == 5
    with pytest.raises(ValueError, match="accepted: newest, every"):
        make_handoff("oldest", 5)


def test_worker_on_a_fifo_handles_every_item_in_order():
    fifo: FrameFifo[int] = FrameFifo(100)
    handled: list[int] = []
    done = threading.Event()

    def handle(item: int) -> None:
        time.sleep(0.002)  # slower than the producer: items wait, none is replaced
        handled.append(item)
        if item == 49:
            done.set()

    worker = Worker(fifo, handle, lambda item, exc: None)
    worker.start()
    try:
        for i in range(50):
            assert fifo.put(i) is None
        assert done.wait(5)
    finally:
        worker.stop()
    assert handled == list(range(50)) and fifo.dropped == 0


# ------------------------------------------------------------------ Worker


def test_worker_survives_an_exception_and_reports_it():
    slot: LatestSlot[str] = LatestSlot()
    handled: list[str] = []
    errors: list[tuple[str, BaseException]] = []
    done = threading.Event()

    def handle(item: str) -> None:
        if item == "bad":
            raise ValueError("undecodable frame")
        handled.append(item)
        if item == "last":
            done.set()

    worker = Worker(slot, handle, lambda item, exc: errors.append((item, exc)))
    worker.start()
    try:
        slot.put("bad")
        deadline = time.monotonic() + 2
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        slot.put("last")
        assert done.wait(2)
    finally:
        worker.stop()
    assert handled == ["last"]
    assert len(errors) == 1 and isinstance(errors[0][1], ValueError)
    assert errors[0][0] == "bad", "the error handler must get the item that failed, to answer for it"
    assert str(errors[0][1]) == "undecodable frame"
    assert not worker._thread.is_alive()  # stop() ends the thread
    assert not worker.busy.is_set()


def test_worker_handles_the_newest_frame_after_a_slow_one():
    slot: LatestSlot[int] = LatestSlot()
    handled: list[int] = []
    release = threading.Event()
    finished = threading.Event()

    def handle(item: int) -> None:
        handled.append(item)
        if item == 1:
            release.wait(2)  # a slow model call
        if item == 4:
            finished.set()

    worker = Worker(slot, handle, lambda item, exc: None)
    worker.start()
    try:
        slot.put(1)
        deadline = time.monotonic() + 2
        while not worker.busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert worker.busy.is_set()  # busy while the model runs
        for i in (2, 3, 4):  # the camera goes on while the model is busy
            slot.put(i)
        release.set()
        assert finished.wait(2)
    finally:
        worker.stop()
    assert handled == [1, 4] and slot.dropped == 2


# ------------------------------------------------------------------ synthetic scene


@pytest.fixture(scope="module")
def scene() -> ApproachScene:
    return ApproachScene(width=320, height=240, frames=12)


def test_distance_falls_monotonically_over_the_approach(scene):
    distances = [scene.render(i).true_distance_m for i in range(scene.frames)]
    assert (np.diff(distances) < 0).all()
    # from 0.6 m away to 10 cm straight above the orange cylinder's centre
    assert distances[0] == pytest.approx(0.6) and distances[-1] == pytest.approx(0.1)
    assert scene.target_description == "the orange cylinder"


def test_true_distance_is_the_norm_of_the_3d_positions(scene):
    for i in (0, 5, scene.frames - 1):
        frame = scene.render(i)
        expected = np.linalg.norm(np.subtract(frame.gripper_xyz_m, frame.target_xyz_m))
        assert frame.true_distance_m == pytest.approx(float(expected), abs=1e-12)
        target_world = frame.scene.find("the orange cylinder").centre
        assert frame.target_xyz_m == pytest.approx(tuple(scene.camera.world_to_camera(target_world)))


def test_render_clamps_the_index(scene):
    assert scene.render(-3).true_distance_m == scene.render(0).true_distance_m
    assert scene.render(999).true_distance_m == scene.render(scene.frames - 1).true_distance_m


@pytest.mark.parametrize("width, height", [(640, 480), (320, 240)])
def test_depth_is_aligned_and_the_target_pixels_carry_its_depth(width, height):
    scene = ApproachScene(width=width, height=height, frames=5)
    frame = scene.render(2)
    assert frame.rgb.shape == (height, width, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.shape == (height, width) and frame.depth_m.dtype == np.float32
    assert np.isfinite(frame.depth_m).all() and (frame.depth_m > 0).all()
    target = frame.scene.find("the orange cylinder")
    mask = frame.instance == 3 + frame.scene.objects.index(target)
    assert mask.sum() > 0.002 * width * height
    # The centre of the cylinder's top face projects (pinhole, known intrinsics) onto the cylinder,
    # at that point's depth.
    top = target.centre + np.array([0.0, 0.0, target.size[2] / 2])
    x, y, z = scene.camera.world_to_camera(top)
    k = scene.intrinsics
    u, v = round(k.fx * x / z + k.cx), round(k.fy * y / z + k.cy)
    assert mask[v, u] and frame.depth_m[v, u] == pytest.approx(z, abs=0.005)
    # Gripper pixels lie within its size of the TCP's depth; the table farther back is deeper.
    gripper = frame.instance == 2
    assert gripper.any() and np.abs(frame.depth_m[gripper] - frame.gripper_xyz_m[2]).max() < 0.12
    assert frame.depth_m[0, 0] > frame.depth_m[-1, 0]


def test_scene_refuses_unusable_sizes():
    with pytest.raises(ValueError, match="32x32"):
        ApproachScene(width=16, height=480)
    with pytest.raises(ValueError, match="frames must be at least 1"):
        ApproachScene(frames=0)

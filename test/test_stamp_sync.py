"""Depth and camera_info joined to a colour frame by header stamp (spatial/stamp_sync.py), and the annotator
applying that rule to recorded bags.

Bad inputs tried: a stalled depth stream (stops, colour goes on), a late stream (correct stamps, arriving
long after), a mis-stamped stream (stamps off by a frame or more, zero stamps), depth received before or
after its frame, a neighbouring frame's depth just outside the slop, a latched camera_info.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image

from spatialvlm_ros.spatial.episode_frames import iter_frames
from spatialvlm_ros.spatial.episodes import EpisodeWriter, TopicSpec
from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
from spatialvlm_ros.spatial.stamp_sync import StampedBuffer, SyncPolicy, match_stamped

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
POLICY = SyncPolicy(slop_s=0.01, max_age_s=0.5)


def test_the_nearest_stamp_within_the_slop_wins_whatever_the_arrival_order():
    cands = [(T0 - 33 * MS, T0 - 30 * MS, "previous"), (T0 + 2 * MS, T0 + 40 * MS, "own"),
             (T0 + 33 * MS, T0 + 60 * MS, "next")]
    match = match_stamped(cands, T0, T0 + 1 * MS, POLICY)
    assert match.value == "own" and match.reason is None
    assert match.stamp_offset_s == pytest.approx(0.002)


def test_a_neighbouring_frame_outside_the_slop_is_not_used():
    match = match_stamped([(T0 - 33 * MS, T0, "previous")], T0, T0 + 1 * MS, POLICY)
    assert match.value is None
    assert "no depth stamped within sync.slop_s (0.01 s)" in match.reason and "0.033 s away" in match.reason


def test_a_stalled_stream_is_not_used_and_says_so():
    # The last depth arrived 2 s before the frame; its stamp would even match a frozen clock.
    match = match_stamped([(T0, T0 - 2000 * MS, "old")], T0, T0, POLICY, "depth")
    assert match.value is None and match.reason.startswith("depth stalled: the newest depth arrived 2.00 s")


def test_a_late_stream_with_right_stamps_is_not_used():
    # Stamped like the frame but received 1.2 s after it (a backed-up stream).
    match = match_stamped([(T0, T0 + 1200 * MS, "late")], T0, T0, POLICY)
    assert match.value is None and "arrived 1.20 s after it" in match.reason


def test_mis_stamped_and_unstamped_messages():
    # A stream stamped with another clock (sim time, a driver bug): never within the slop.
    match = match_stamped([(5 * 10**9, T0, "other clock")], T0, T0, POLICY)
    assert match.value is None and "no depth stamped within" in match.reason
    # Zero stamps are placed at their arrival: an unstamped depth arriving with the frame matches.
    buf: StampedBuffer[str] = StampedBuffer()
    buf.add(0, T0 + 3 * MS, "unstamped")
    assert buf.match(0, T0, POLICY).value == "unstamped"
    assert buf.match(0, T0 + 100 * MS, POLICY).value is None


def test_no_stream_at_all_is_no_warning():
    match = match_stamped([], T0, T0, POLICY)
    assert match.value is None and match.reason is None


def test_policy_refuses_bad_values():
    with pytest.raises(ValueError, match="sync.slop_s"):
        SyncPolicy(slop_s=-1.0)
    with pytest.raises(ValueError, match="sync.max_age_s"):
        SyncPolicy(max_age_s=0.0)


def test_wait_match_waits_for_a_live_stream_only():
    import threading
    import time

    now = [T0]
    buf: StampedBuffer[str] = StampedBuffer()
    buf.add(T0 - 33 * MS, T0, "previous")

    def later():
        time.sleep(0.05)
        buf.add(T0, T0 + 10 * MS, "own")

    thread = threading.Thread(target=later)
    thread.start()
    match = buf.wait_match(T0, T0, POLICY, "depth", lambda: now[0], timeout_s=5.0)
    thread.join()
    assert match.value == "own"
    # Stalled (newest arrival older than max_age_s by the clock): no waiting at all.
    now[0] = T0 + 2000 * MS
    started = time.monotonic()
    match = buf.wait_match(T0 + 1990 * MS, T0 + 1990 * MS, POLICY, "depth", lambda: now[0], timeout_s=5.0)
    assert match.value is None and "stalled" in match.reason
    assert time.monotonic() - started < 4.0  # returned without using its 5 s timeout
    # The stream has moved past the frame's stamp: the match cannot come any more.
    buf.add(T0 + 2033 * MS, T0 + 2000 * MS, "next")
    started = time.monotonic()
    match = buf.wait_match(T0 + 1990 * MS, T0 + 1995 * MS, POLICY, "depth", lambda: now[0], timeout_s=5.0)
    assert match.value is None and time.monotonic() - started < 4.0


# ---------------------------------------------------------------------------------------------
# The annotator: the same rule on a recorded bag


def _stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


def write_rgbd(directory: Path, depth_plan: dict[int, tuple[int, int] | None], n: int = 6,
               period_ns: int = 33 * MS) -> Path:
    """n colour frames; frame i's depth (value i+1 m) stamped/received at depth_plan[i] offsets (ns)
    from the frame (None: no depth for that frame). camera_info is stamped like each frame."""
    writer = EpisodeWriter(directory, task="sync", target_object="x")
    writer.open([TopicSpec("/cam/image", "sensor_msgs/msg/Image"),
                 TopicSpec("/cam/depth", "sensor_msgs/msg/Image"),
                 TopicSpec("/cam/camera_info", "sensor_msgs/msg/CameraInfo")])
    items = []
    for i in range(n):
        stamp = T0 + i * period_ns
        image = Image(**rgb_to_image_fields(np.full((12, 16, 3), i, np.uint8)))
        _stamp(image, stamp)
        items.append((stamp + MS, "/cam/image", serialize_message(image)))
        info = CameraInfo(width=16, height=12, k=[10.0, 0, 8, 0, 10.0, 6, 0, 0, 1])
        _stamp(info, stamp)
        items.append((stamp + 2 * MS, "/cam/camera_info", serialize_message(info)))
        plan = depth_plan.get(i, (0, 3 * MS))
        if plan is not None:
            depth = Image(**metres_to_depth_fields(np.full((12, 16), float(i + 1), np.float32)))
            _stamp(depth, stamp + plan[0])
            items.append((stamp + plan[1], "/cam/depth", serialize_message(depth)))
    for received, topic, data in sorted(items, key=lambda t: t[0]):
        assert writer.put(topic, data, received)
    assert writer.finalize("test").bag_readable
    return directory


def _frames(episode: Path, policy: SyncPolicy = POLICY):
    return {r.frame_index: r for r in iter_frames(episode, "/cam/image", "/cam/depth", "/cam/camera_info",
                                                  sync=policy)}


def test_annotator_uses_depth_stamped_like_the_frame_even_when_it_arrives_after(tmp_path):
    frames = _frames(write_rgbd(tmp_path / "ep", {i: (0, 20 * MS) for i in range(6)}))
    for i, record in frames.items():
        assert float(np.nanmean(record.frame.depth_m)) == pytest.approx(i + 1, abs=1e-3)  # its own
        assert record.frame.intrinsics is not None and record.depth_note is None


def test_annotator_stalled_late_and_mis_stamped_depth_is_not_used(tmp_path):
    # Stalled: depth for frames 0 and 1 only, colour goes on for 1 s.
    frames = _frames(write_rgbd(tmp_path / "stalled", {i: None for i in range(2, 30)}, n=30))
    assert frames[1].frame.depth_m is not None
    assert frames[2].frame.depth_m is None and "no depth stamped within" in frames[2].depth_note
    assert all(frames[i].frame.depth_m is None for i in range(2, 30))
    # more than sync.max_age_s after frame 1's depth arrived, the stream counts as stalled
    assert frames[29].depth_note.startswith("depth stalled: the newest depth arrived 0.92 s")
    # Late: right stamps, received 0.8 s after the frame.
    # A frame waits for its depth at most sync.max_age_s (live and here alike), so the late
    # depth has not arrived when the frame is assembled: the older depths around are not its own.
    frames = _frames(write_rgbd(tmp_path / "late", {i: (0, 800 * MS) for i in range(30)}, n=30))
    assert all(r.frame.depth_m is None for r in frames.values())
    assert frames[0].depth_note is None  # no depth had arrived at all yet: nothing to warn about
    assert "no depth stamped within sync.slop_s (0.01 s) of this frame (nearest stamp 0.330 s away)" \
        in frames[20].depth_note
    # Mis-stamped by 15 ms (half a frame: a driver with a stamping offset).
    frames = _frames(write_rgbd(tmp_path / "mis", {i: (-15 * MS, 3 * MS) for i in range(6)}))
    assert all(r.frame.depth_m is None for r in frames.values())
    assert "no depth stamped within sync.slop_s (0.01 s) of this frame (nearest stamp 0.015 s away)" \
        in frames[3].depth_note
    # The same bag with a slop wider than the error accepts it, nearest stamp first: the parameter decides.
    frames = _frames(tmp_path / "mis", SyncPolicy(slop_s=0.05, max_age_s=0.5))
    assert float(np.nanmean(frames[3].frame.depth_m)) == pytest.approx(4.0, abs=1e-3)

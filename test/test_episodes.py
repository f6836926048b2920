"""The episode core (spatialvlm_ros.spatial.episodes) without a ROS graph: bag + episode.yaml."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from mcap_ros2.reader import read_ros2_messages
from rosbags.highlevel import AnyReader

import spatialvlm_ros
from spatialvlm_ros.spatial import episodes
from spatialvlm_ros.spatial.episodes import (
    EpisodeError,
    EpisodeWriter,
    TopicSpec,
    check_writable,
    load_episode_info,
    make_qos,
    new_episode_dir,
    read_episode,
    unrecordable_reason,
)

TS = episodes.default_typestore()
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
Image = TS.types["sensor_msgs/msg/Image"]
JointState = TS.types["sensor_msgs/msg/JointState"]
Float32 = TS.types["std_msgs/msg/Float32"]

IMAGE = TopicSpec("/cam/image", "sensor_msgs/msg/Image", (make_qos(2, 2, depth=5),))
JOINTS = TopicSpec("/joint_states", "sensor_msgs/msg/JointState", (make_qos(1, 2, depth=10),))
REWARD = TopicSpec("/reward", "std_msgs/msg/Float32")


def image_cdr(seq: int, width: int = 64, height: int = 48) -> bytes:
    import numpy as np

    data = np.full(width * height * 3, seq % 251, np.uint8)
    msg = Image(Header(Time(seq, 7), f"cam:{seq}"), height, width, "rgb8", 0, width * 3, data)
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def joints_cdr(seq: int) -> bytes:
    import numpy as np

    msg = JointState(Header(Time(seq, 0), f"j:{seq}"), ["a", "b"],
                     np.array([seq, -seq], float), np.zeros(2), np.zeros(0))
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def frame_ids(directory: Path, topic: str) -> list[str]:
    out = []
    with AnyReader([directory]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _, raw in reader.messages(connections=conns):
            out.append(reader.deserialize(raw, conn.msgtype).header.frame_id)
    return out


def test_round_trip_keeps_bytes_times_and_labels(tmp_path: Path) -> None:
    writer = EpisodeWriter(new_episode_dir(tmp_path), task="pick up the bottle",
                           target_object="the orange tea bottle",
                           software_version=spatialvlm_ros.__version__)
    writer.open([IMAGE, JOINTS], unrecorded={"/depth": "no publisher seen on this topic yet"})
    opened = load_episode_info(writer.directory)
    assert opened["finalized"] is False and opened["task"] == "pick up the bottle"

    sent = []
    for seq in range(40):
        sent.append(("/cam/image", 1_000 + 10 * seq, image_cdr(seq)))
        for k in range(3):
            sent.append(("/joint_states", 1_000 + 10 * seq + k + 1, joints_cdr(3 * seq + k)))
    writer.add_topic(REWARD)  # a topic found mid-episode
    sent.append(("/reward", 5_000, bytes(TS.serialize_cdr(Float32(-0.5), "std_msgs/msg/Float32"))))
    for topic, stamp, raw in sent:
        assert writer.put(topic, raw, stamp)
    writer.set_labels(target_object="the green cup")
    summary = writer.finalize("test done")

    assert summary.bag_readable and summary.error is None
    assert summary.message_counts == {"/cam/image": 40, "/joint_states": 120, "/reward": 1}
    assert summary.frames_dropped == 0

    back = list(read_episode(writer.directory))
    assert [(m.topic, m.timestamp, m.rawdata) for m in back] == sent
    assert {m.msgtype for m in back if m.topic == "/cam/image"} == {"sensor_msgs/msg/Image"}
    assert [m.topic for m in read_episode(writer.directory, topics=["/reward"])] == ["/reward"]

    # mcap-ros2-support decodes with the definitions stored in the file (no ROS, no typestore).
    mcap_file = next(writer.directory.glob("*.mcap"))
    decoded = [(m.channel.topic, m.log_time_ns, m.ros_msg) for m in read_ros2_messages(mcap_file)]
    assert [(t, s) for t, s, _ in decoded] == [(t, s) for t, s, _ in sent]
    assert decoded[0][2].header.frame_id == "cam:0" and decoded[1][2].name == ["a", "b"]

    info = load_episode_info(writer.directory)
    assert info["finalized"] is True and info["stop_reason"] == "test done"
    assert info["task"] == "pick up the bottle" and info["target_object"] == "the green cup"
    assert info["message_counts"] == summary.message_counts and info["message_count"] == 161
    assert info["frames_dropped"] == 0
    assert info["software"]["version"] == spatialvlm_ros.__version__ != ""
    assert info["unrecorded_topics"] == {"/depth": "no publisher seen on this topic yet"}
    assert datetime.fromisoformat(info["start_time"]).timestamp() == pytest.approx(
        info["start_time_ns"] / 1e9, abs=1e-5)
    assert info["end_time_ns"] >= info["start_time_ns"]
    assert info["duration_s"] == pytest.approx(
        (info["end_time_ns"] - info["start_time_ns"]) / 1e9, abs=1e-6)

    meta = yaml.safe_load((writer.directory / "metadata.yaml").read_text())
    bag = meta["rosbag2_bagfile_information"]
    assert (bag["storage_identifier"], bag["version"], bag["message_count"]) == ("mcap", 8, 161)
    assert bag["custom_data"]["spatialvlm_ros.target_object"] == "the green cup"
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in bag["topics_with_message_count"]}
    assert "reliability: 2" in qos["/cam/image"] and "reliability: 1" in qos["/joint_states"]
    assert not list(writer.directory.glob(".*")), "reserve / temporary files left behind"


def test_finalize_is_idempotent_and_refuses_later_messages(tmp_path: Path) -> None:
    finished = []
    writer = EpisodeWriter(tmp_path / "ep", on_finished=finished.append)
    writer.open([JOINTS])
    assert writer.put("/joint_states", joints_cdr(0), 1)
    first = writer.finalize("one")
    assert writer.finalize("two") is first and first.stop_reason == "one"
    assert not writer.put("/joint_states", joints_cdr(1), 2)
    assert finished == [first] and first.message_counts == {"/joint_states": 1}
    other = EpisodeWriter(tmp_path / "ep2")
    other.open([])
    with pytest.raises(KeyError):  # a topic that was never added is a caller bug, not a drop
        other.put("/nope", b"\0\1\0\0", 1)
    assert other.finalize().message_counts == {}


def test_full_queue_refuses_and_counts_but_never_loses_accepted(tmp_path, monkeypatch) -> None:
    gate = threading.Event()
    real_write = episodes._BagWriter.write

    def slow_write(self, *args, **kwargs):
        gate.wait(10)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(episodes._BagWriter, "write", slow_write)
    raw = image_cdr(1)
    drops = []
    writer = EpisodeWriter(tmp_path / "ep", max_queue_bytes=3 * len(raw) + 10,
                           on_drop=lambda topic, total: drops.append((topic, total)))
    writer.open([IMAGE])
    results = [writer.put("/cam/image", image_cdr(seq), seq) for seq in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert drops[-1] == ("/cam/image", 7) and writer.frames_dropped() == 7
    gate.set()
    summary = writer.finalize()
    assert summary.message_counts == {"/cam/image": 3} and summary.frames_dropped == 7
    assert frame_ids(writer.directory, "/cam/image") == ["cam:0", "cam:1", "cam:2"]
    info = load_episode_info(writer.directory)
    assert info["frames_dropped"] == 7 and info["frames_dropped_queue_full"] == 7
    assert info["topics"]["/cam/image"]["dropped_queue_full"] == 7


class FailingFile:
    """A file that accepts ``budget`` more bytes, writes part of the next write, then ENOSPC."""

    def __init__(self, real, budget: int) -> None:
        self.real, self.budget = real, budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.budget:
            self.real.write(data[: self.budget])
            self.real.flush()
            self.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_disk_error_mid_chunk_stops_with_a_readable_bag(tmp_path: Path) -> None:
    finished = []
    writer = EpisodeWriter(tmp_path / "ep", on_finished=finished.append)
    writer.open([IMAGE])
    storage = writer._bag.mcap
    storage.bio = FailingFile(storage.bio, budget=3_500_000)  # the disk fills in the 4th MB
    raw_size = len(image_cdr(0, 640, 480))
    put = 0
    while writer.put("/cam/image", image_cdr(put, 640, 480), put):
        put += 1
        if put > 40:
            writer._done.wait(5)
    summary = writer.finalize("not reached")
    assert finished == [summary]
    assert summary.error and "disk full" in summary.error and "ENOSPC" in summary.error
    assert summary.stop_reason.startswith("error: disk full")
    assert summary.bag_readable and not writer.recording
    ids = frame_ids(writer.directory, "/cam/image")
    n = len(ids)
    assert 0 < n < put and n * raw_size < 3_500_000
    assert ids == [f"cam:{i}" for i in range(n)], "what was written before the error is kept whole"
    mcap_file = next(writer.directory.glob("*.mcap"))
    assert sum(1 for _ in read_ros2_messages(mcap_file)) == n
    info = load_episode_info(writer.directory)
    assert info["finalized"] is True and info["message_counts"] == {"/cam/image": n}
    assert info["messages_not_written_after_error"] == put - n == info["frames_dropped"]
    meta = yaml.safe_load((writer.directory / "metadata.yaml").read_text())
    assert meta["rosbag2_bagfile_information"]["message_count"] == n


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    cmd = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs")
def test_really_full_disk_leaves_a_readable_bag(tmp_path: Path) -> None:
    """A real ENOSPC: a 12 MB tmpfs (in a private mount namespace) fills up mid-episode."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    keep = tmp_path / "kept"
    script = textwrap.dedent(f"""
        import shutil, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_episodes import image_cdr, IMAGE
        from spatialvlm_ros.spatial.episodes import EpisodeWriter
        w = EpisodeWriter({str(mount / "ep")!r})
        w.open([IMAGE])
        n = 0
        while w.put("/cam/image", image_cdr(n, 640, 480), n) and n < 100:
            n += 1
            time.sleep(0.003)
        s = w.finalize("not reached")
        print("PUT", n, "ERROR", s.error)
        shutil.copytree(s.directory, {str(keep)!r})
    """)
    inner = f"mount -t tmpfs -o size=12m tmpfs {mount} && exec {sys.executable} -c \"$0\""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", inner, script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stdout, proc.stdout
    put = int(re.search(r"PUT (\d+)", proc.stdout).group(1))
    ids = frame_ids(keep, "/cam/image")
    assert 0 < len(ids) < put and ids == [f"cam:{i}" for i in range(len(ids))]
    info = load_episode_info(keep)
    assert info["finalized"] is True and "disk full" in info["error"]
    assert info["message_counts"] == {"/cam/image": len(ids)}


def test_unwritable_output_dir_is_refused_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    reason = check_writable(blocker / "episodes")
    assert reason and "not writable" in reason and str(blocker) in reason
    with pytest.raises(EpisodeError, match="not writable"):
        EpisodeWriter(new_episode_dir(blocker / "episodes")).open([IMAGE])
    assert check_writable(tmp_path / "fresh" / "episodes") is None
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "Permission denied" in (check_writable(locked) or "")


def test_unrecordable_types_are_named() -> None:
    assert unrecordable_reason("sensor_msgs/msg/Image") is None
    reason = unrecordable_reason("std_srvs/srv/SetBool_Request")
    assert reason and "std_srvs/srv/SetBool_Request" in reason and "typestore" in reason


def test_episode_dir_names_are_timestamped_and_unique(tmp_path: Path) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901)
    first = new_episode_dir(tmp_path, when)
    assert first.name == "episode_20260102_030405_678901" and first.parent == tmp_path
    first.mkdir()
    assert new_episode_dir(tmp_path, when).name == "episode_20260102_030405_678901_1"


def test_episode_left_open_is_finalized_at_interpreter_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_episodes import joints_cdr, JOINTS
        from spatialvlm_ros.spatial.episodes import EpisodeWriter
        w = EpisodeWriter({str(tmp_path / "ep")!r})
        w.open([JOINTS])
        for i in range(500):
            w.put("/joint_states", joints_cdr(i), i + 1)
        # no finalize(): the process just ends
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    ids = [m for m in read_episode(tmp_path / "ep")]
    assert len(ids) == 500
    assert load_episode_info(tmp_path / "ep")["stop_reason"] == "interpreter exit"

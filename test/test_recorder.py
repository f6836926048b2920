"""recorder_node over real rclpy topics and services, and as the console script a user starts.

The node runs in this process on a private rclpy context (so it cannot disturb other test
modules), except where the test is about the process: the SIGINT/SIGTERM tests run `recorder_node`
itself, and the zero-loss test publishes from a separate process (test/recorder_publisher.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import rclpy
from mcap.reader import make_reader
from mcap_ros2.reader import read_ros2_messages
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import SetBool

from spatialvlm_ros.node_support import StartupError
from spatialvlm_ros.recorder_node import RecorderNode
from spatialvlm_ros.spatial.episodes import load_episode_info, read_episode

HERE = Path(__file__).resolve().parent
PUBLISHER = HERE / "recorder_publisher.py"
VENV_BIN = Path(sys.executable).parent
# Start children with SIGINT at its default even when this runner was started with it ignored
# (as background jobs of non-interactive shells are): Ctrl-C must reach the recorder.
SIGINT_DEFAULT = [sys.executable, "-c",
                  "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])"]
_ns_counter = itertools.count()


def wait_for(condition: Callable[[], object], timeout: float = 10.0,
             what: str | Callable[[], str] = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for "
                         f"{what() if callable(what) else what}")


class Graph:
    """A private rclpy context with a spinning executor and a client node that plays the user."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        # Single-threaded, as recorder_node's main() spins it (run_nodes(num_threads=1)); rclpy's
        # MultiThreadedExecutor here stalled deliveries for seconds (bench/executor_latency.py).
        self.executor = SingleThreadedExecutor(context=self.context)
        self.client = Node("recorder_test_client", context=self.context)
        self.executor.add_node(self.client)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._record_clients: dict[str, object] = {}

    def record(self, ns: str, start: bool, timeout: float = 30.0) -> SetBool.Response:
        client = self._record_clients.get(ns)
        if client is None:
            client = self._record_clients[ns] = self.client.create_client(SetBool, f"{ns}/record")
        assert client.wait_for_service(timeout_sec=timeout), f"{ns}/record never appeared"
        future = client.call_async(SetBool.Request(data=start))
        wait_for(future.done, timeout, f"{ns}/record answer")
        return future.result()

    def publisher(self, msg_type, topic: str, reliable: bool = True, depth: int = 1000):
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return self.client.create_publisher(msg_type, topic, qos)

    def recorder_qos(self, topic: str) -> list[ReliabilityPolicy]:
        infos = self.client.get_subscriptions_info_by_topic(topic)
        return [i.qos_profile.reliability for i in infos if i.node_name == "spatialvlm_recorder"]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.client.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def ros():
    graph = Graph()
    yield graph
    graph.close()


@pytest.fixture
def make_recorder(ros: Graph, tmp_path: Path):
    """Builds RecorderNodes in fresh namespaces, spinning on the module's executor."""
    made: list[RecorderNode] = []

    def make(**params) -> tuple[RecorderNode, str]:
        ns = f"/rec{next(_ns_counter)}"
        values = {"output_dir": str(tmp_path / "episodes"), "topic_discovery_period_s": 0.1,
                  **params}
        node = RecorderNode(namespace=ns, context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        ros.executor.add_node(node)
        made.append(node)
        return node, ns

    yield make
    for node in made:
        node.close()
        ros.executor.remove_node(node)
        node.destroy_node()


def joint_state(seq: int) -> JointState:
    msg = JointState()
    msg.header.frame_id = str(seq)
    msg.name = ["a"]
    msg.position = [float(seq)]
    return msg


def image(seq: int, width: int = 640, height: int = 480) -> Image:
    msg = Image()
    msg.header.frame_id = str(seq)
    msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
    data = bytearray(width * height * 3)
    data[:8] = seq.to_bytes(8, "little")
    msg.data = data
    return msg


def recorded(directory: Path) -> dict[str, list[tuple[int, int, int, str]]]:
    """topic -> [(seq from frame_id, header stamp ns, bag timestamp ns, sha1 of the bytes)].

    Warm-up messages (frame_id "warmup") are left out.
    """
    out: dict[str, list] = defaultdict(list)
    with AnyReader([directory]) as reader:
        for conn, stamp, raw in reader.messages():
            header = reader.deserialize(raw, conn.msgtype).header
            if header.frame_id == "warmup":
                continue
            out[conn.topic].append((int(header.frame_id),
                                    header.stamp.sec * 1_000_000_000 + header.stamp.nanosec,
                                    stamp, hashlib.sha1(raw).hexdigest()))
    return out


WARMUP = b"warmup"


def numbered(raws: list[bytes]) -> list[bytes]:
    return [raw for raw in raws if WARMUP not in raw[:64]]


class Witness:
    """Raw subscriptions in this process: the bytes exactly as they came over the wire."""

    def __init__(self, node: Node, topics: dict[str, type]) -> None:
        self.raw: dict[str, list[bytes]] = {t: [] for t in topics}
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in topics.items():
            node.create_subscription(msg_type, topic, self.raw[topic].append, qos, raw=True)


def spy_on_accepted(episode) -> dict[str, list[bytes]]:
    """What the recorder's episode accepted, per topic (wraps EpisodeWriter.put)."""
    accepted: dict[str, list[bytes]] = defaultdict(list)
    real_put = episode.put

    def put(topic: str, data: bytes, stamp: int) -> bool:
        ok = real_put(topic, data, stamp)
        if ok:
            accepted[topic].append(data)
        return ok

    episode.put = put
    return accepted


def test_records_everything_published_by_another_process(ros, make_recorder, tmp_path) -> None:
    node, ns = make_recorder(task="test the recorder", target_object="the orange tea bottle",
                             topics=["image", "depth", "camera_info", "joint_states"])
    types = {"image": Image, "depth": Image, "camera_info": CameraInfo,
             "joint_states": JointState}
    topics = [f"{ns}/{name}" for name in types]
    witness = Witness(ros.client, {f"{ns}/{name}": t for name, t in types.items()})
    started = ros.record(ns, True)
    assert started.success, started.message
    episode_dir = Path(started.message)
    accepted = spy_on_accepted(node.episode)
    report_path = tmp_path / "published.json"
    proc = subprocess.Popen(
        [sys.executable, str(PUBLISHER), "--seconds", "2.5", "--namespace", ns, "--wait-go",
         "--subscribers", "2", "--report", str(report_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        # Numbered messages start once both readers have warm-up messages on every topic: a
        # volatile reader drops what was sent before it had matched the writer.
        wait_for(lambda: all(accepted[t] and witness.raw[t] for t in topics), 30,
                 "warm-up messages at the recorder and the witness")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert report["acked"], "the publisher's reliable writers were not all acknowledged"
    published = {f"{ns}/{name}": t for name, t in report["topics"].items()}
    expected = {topic: t["count"] for topic, t in published.items()}
    assert expected[f"{ns}/image"] == 75 and expected[f"{ns}/joint_states"] == 250
    # Acknowledged means it is in each reader's history; wait until the executors took it.
    wait_for(lambda: all(len(numbered(witness.raw[t])) == expected[t] for t in topics), 20,
             lambda: f"the witness to have everything: {expected}")
    wait_for(lambda: all(len(numbered(accepted[t])) == expected[t] for t in topics), 20,
             lambda: "the recorder to accept everything: "
                     f"{ {t: len(numbered(accepted[t])) for t in topics} } != {expected}")
    stopped = ros.record(ns, False)
    assert stopped.success and stopped.message == started.message

    info = load_episode_info(episode_dir)
    assert info["message_counts"] == {t: len(accepted[t]) for t in topics}
    assert info["frames_dropped"] == 0 and info["finalized"] is True
    assert info["task"] == "test the recorder"
    assert info["target_object"] == "the orange tea bottle"
    assert info["topics"][f"{ns}/depth"]["type"] == "sensor_msgs/msg/Image"

    got = recorded(episode_dir)
    for topic, pub in published.items():
        rows = got[topic]
        assert [r[0] for r in rows] == list(range(pub["count"])), f"{topic}: lost or reordered"
        assert [r[1] for r in rows] == pub["stamps"], f"{topic}: header stamps differ"
        wire = [hashlib.sha1(raw).hexdigest() for raw in numbered(witness.raw[topic])]
        assert [r[3] for r in rows] == wire, f"{topic}: bag bytes differ from the wire bytes"
        for seq, header_ns, bag_ns, _ in rows:  # bag time = receive time, after publishing
            assert header_ns <= bag_ns <= info["end_time_ns"], (topic, seq)
            assert bag_ns >= info["start_time_ns"]

    # The same file through mcap + mcap-ros2-support (no rosbags): bytes, then decoded fields.
    mcap_file = next(episode_dir.glob("*.mcap"))
    with open(mcap_file, "rb") as f:
        raw_by_topic = defaultdict(list)
        for _, channel, message in make_reader(f).iter_messages(log_time_order=True):
            raw_by_topic[channel.topic].append(message.data)
    decoded = defaultdict(list)
    for m in read_ros2_messages(mcap_file):
        if m.ros_msg.header.frame_id != "warmup":
            decoded[m.channel.topic].append(m.ros_msg)
    for topic, pub in published.items():
        assert numbered(raw_by_topic[topic]) == numbered(witness.raw[topic])
        assert [int(m.header.frame_id) for m in decoded[topic]] == list(range(pub["count"]))
        if pub["data_sha1"]:  # pixels decoded from the file equal the pixels published
            assert [hashlib.sha1(bytes(m.data)).hexdigest() for m in decoded[topic]] == (
                pub["data_sha1"])


def test_start_while_recording_and_stop_while_idle(ros, make_recorder) -> None:
    node, ns = make_recorder(topics=["joint_states"])
    idle = ros.record(ns, False)
    assert not idle.success and idle.message == "not recording"
    first = ros.record(ns, True)
    assert first.success and Path(first.message).is_dir()
    assert load_episode_info(first.message)["finalized"] is False
    again = ros.record(ns, True)
    assert not again.success and again.message == f"already recording: {first.message}"
    # Task and target may change during the episode; the values at the stop are saved.
    assert all(r.successful for r in node.set_parameters([
        Parameter("task", value="wipe the table"),
        Parameter("target_object", value="the sponge")]))
    stop = ros.record(ns, False)
    assert stop.success and stop.message == first.message
    info = load_episode_info(first.message)
    assert info["finalized"] is True and info["stop_reason"] == "stopped by the record service"
    assert (info["task"], info["target_object"]) == ("wipe the table", "the sponge")
    assert (Path(first.message) / "metadata.yaml").is_file()
    assert not ros.record(ns, False).success
    second = ros.record(ns, True)
    assert second.success and second.message != first.message
    assert ros.record(ns, False).success


def test_unwritable_output_dir_is_refused_with_the_reason(ros, make_recorder, tmp_path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    node, ns = make_recorder(topics=["joint_states"], output_dir=str(blocker / "episodes"))
    refused = ros.record(ns, True)
    assert not refused.success
    assert "not writable" in refused.message and str(blocker) in refused.message
    assert not node.recording
    assert node.set_parameters([Parameter("output_dir", value=str(tmp_path / "ok"))])[0].successful
    started = ros.record(ns, True)
    assert started.success and started.message.startswith(str(tmp_path / "ok"))
    assert ros.record(ns, False).success


def test_disk_error_stops_the_episode_and_says_why(ros, make_recorder) -> None:
    from test_episodes import FailingFile

    node, ns = make_recorder(topics=["image"])
    pub = ros.publisher(Image, f"{ns}/image")
    wait_for(lambda: pub.get_subscription_count() > 0, what="recorder subscribed to image")
    started = ros.record(ns, True)
    storage = node.episode._bag.mcap
    storage.bio = FailingFile(storage.bio, budget=2_500_000)
    seq = 0
    while node.recording and seq < 200:
        pub.publish(image(seq))
        seq += 1
        time.sleep(0.01)
    assert not node.recording, "a disk error must end the episode"
    answer = ros.record(ns, False)
    assert not answer.success and "disk full" in answer.message
    assert started.message in answer.message
    info = load_episode_info(started.message)
    assert info["finalized"] is True and "ENOSPC" in info["error"]
    n = info["message_counts"][f"{ns}/image"]
    assert 0 < n and [m.topic for m in read_episode(started.message)] == [f"{ns}/image"] * n


def test_unrecordable_topic_type_is_reported(ros, make_recorder) -> None:
    node, ns = make_recorder(topics=["weird", "joint_states"])
    started = ros.record(ns, True)
    weird = ros.publisher(SetBool.Request, f"{ns}/weird")  # a type rosbags' typestore lacks
    joints = ros.publisher(JointState, f"{ns}/joint_states")
    reason = wait_for(lambda: "typestore" in node.unrecorded_topics().get(f"{ns}/weird", "")
                      and node.unrecorded_topics()[f"{ns}/weird"], what="weird reported")
    assert "std_srvs/srv/SetBool_Request" in reason
    wait_for(lambda: joints.get_subscription_count() > 0, what="joint_states subscribed")
    assert weird.get_subscription_count() == 0

    def published_and_accepted() -> bool:  # until the reader side has matched too
        joints.publish(joint_state(0))
        return node.episode.accepted_counts().get(f"{ns}/joint_states", 0) > 0

    wait_for(published_and_accepted, what="a joint state recorded")
    assert ros.record(ns, False).success
    info = load_episode_info(started.message)
    assert info["unrecorded_topics"] == {f"{ns}/weird": reason}
    assert list(info["message_counts"]) == [f"{ns}/joint_states"]
    assert info["message_counts"][f"{ns}/joint_states"] > 0


def test_subscriptions_follow_the_publishers_reliability(ros, make_recorder) -> None:
    node, ns = make_recorder(topics=["image", "joint_states"])
    ros.publisher(Image, f"{ns}/image", reliable=False)
    ros.publisher(JointState, f"{ns}/joint_states", reliable=True)
    best_effort, reliable = ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE
    wait_for(lambda: ros.recorder_qos(f"{ns}/image") == [best_effort], what="image subscribed")
    wait_for(lambda: ros.recorder_qos(f"{ns}/joint_states") == [reliable], what="joints reliable")
    # A best-effort publisher joins: a reliable subscription would never hear it.
    ros.publisher(JointState, f"{ns}/joint_states", reliable=False)
    wait_for(lambda: ros.recorder_qos(f"{ns}/joint_states") == [best_effort],
             what="joint_states re-subscribed best-effort")


def test_invalid_parameters_are_refused(ros, make_recorder) -> None:
    def build(**params) -> None:
        node = RecorderNode(namespace="/rec_bad", context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        node.destroy_node()

    with pytest.raises(StartupError, match="max_queue_mb"):
        build(max_queue_mb=1)
    with pytest.raises(StartupError, match="topics"):  # rclpy refuses an empty list itself
        RecorderNode(namespace="/rec_bad", context=ros.context, parameter_overrides=[
            Parameter("topics", Parameter.Type.STRING_ARRAY, [])])
    with pytest.raises(StartupError, match="not a valid topic name"):
        build(topics=["image", "bad name!"])
    with pytest.raises(StartupError, match="not a valid topic name"):
        build(topics=[""])

    node, _ = make_recorder(topics=["joint_states"])
    result = node.set_parameters([Parameter("max_episode_duration_s", value=-1.0)])[0]
    assert not result.successful and "max_episode_duration_s out of range" in result.reason
    assert not node.set_parameters([Parameter("topics", value=["other"])])[0].successful
    assert node.get_parameter("max_episode_duration_s").value == 0.0


def test_episode_stops_itself_after_max_duration(ros, make_recorder) -> None:
    node, ns = make_recorder(topics=["joint_states"], max_episode_duration_s=0.5)
    started = ros.record(ns, True)
    assert started.success
    wait_for(lambda: load_episode_info(started.message)["finalized"], 10,
             "the episode to stop and be finalized on its own")
    assert not node.recording
    info = load_episode_info(started.message)
    assert "max_episode_duration_s" in info["stop_reason"]
    assert 0.5 <= info["duration_s"] < 5.0
    late = ros.record(ns, False)
    assert not late.success and "max_episode_duration_s" in late.message


def test_recorder_does_not_import_torch() -> None:
    code = ("import sys, spatialvlm_ros.recorder_node; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print('heavy:', bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_episode_finalizes_the_bag(ros, tmp_path, sig) -> None:
    ns = f"/rec_sig_{sig.name.lower()}"
    out = tmp_path / "episodes"
    proc = subprocess.Popen(
        SIGINT_DEFAULT + [str(VENV_BIN / "recorder_node"), "--ros-args", "-r", f"__ns:={ns}",
                          "-p", f"output_dir:={out}", "-p", "topic_discovery_period_s:=0.1",
                          "-p", "topics:=[image, joint_states]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    stop_publishing = threading.Event()
    try:
        joints = ros.publisher(JointState, f"{ns}/joint_states")
        images = ros.publisher(Image, f"{ns}/image", depth=100)
        started = ros.record(ns, True)
        assert started.success, started.message
        wait_for(lambda: joints.get_subscription_count() and images.get_subscription_count(),
                 30, "the recorder to subscribe")

        def publish() -> None:
            for seq in itertools.count():
                if stop_publishing.is_set():
                    return
                joints.publish(joint_state(seq))
                if seq % 3 == 0:
                    images.publish(image(seq // 3))
                time.sleep(0.01)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        mcap_file = Path(started.message) / f"{Path(started.message).name}.mcap"
        wait_for(lambda: mcap_file.exists() and mcap_file.stat().st_size > 4_000_000, 30,
                 "a few MB of the episode on disk")
        proc.send_signal(sig)  # mid-episode: messages keep coming
        output, _ = proc.communicate(timeout=30)
    finally:
        stop_publishing.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    info = load_episode_info(started.message)
    assert info["finalized"] is True and "shut down" in info["stop_reason"], output
    got = recorded(Path(started.message))
    for topic in (f"{ns}/joint_states", f"{ns}/image"):
        seqs = [r[0] for r in got[topic]]
        assert len(seqs) == info["message_counts"][topic] > 0
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{topic}: gap in the bag"
    mcap_file = next(Path(started.message).glob("*.mcap"))
    assert sum(1 for _ in read_ros2_messages(mcap_file)) == info["message_count"]
    assert f"episode {started.message}:" in output


def test_console_script_refuses_invalid_parameters_at_start(tmp_path) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "recorder_node"), "--ros-args", "-r", "__ns:=/rec_refused",
         "-p", f"output_dir:={tmp_path}", "-p", "max_queue_mb:=1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "start-up failed" in proc.stdout and "max_queue_mb" in proc.stdout
    assert not any(tmp_path.iterdir())

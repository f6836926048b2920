"""affordance_node over real rclpy topics, services and parameters.

In-process tests drive the node with a scripted estimator, so a test can choose each frame's gap, a
refusal or an order-sensitive model: it answers in words, "about N cm" with N written in the frame's first pixel, and the words go
through the real parsing and decision path. The planner-like client of the end-to-end tests runs in
this process while the node runs as its own console script with the shipped tiny spatial model (real
numbers about the demo scene) or the tiny random checkpoint (loading and wiring only).
"""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import VENV_BIN, Spinner, start_process, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from spatialvlm_ros.affordance_node import AffordanceNode
from spatialvlm_ros.params import AFFORDANCE_PARAMS, REWARD_PARAMS
from spatialvlm_ros.reward_node import RewardNode
from spatialvlm_ros.spatial import estimator as estimator_module
from spatialvlm_ros.spatial.affordance import DEFAULT_GAP_TEMPLATE
from spatialvlm_ros.spatial.estimator import Estimate, combine_answers
from spatialvlm_ros.spatial.imaging import rgb_to_image_fields


class ScriptedGapEstimator:
    """Stands in for the model: the gap is written in the frame, the answer is words.

    Red value v -> "about v cm" (0: a refusal with no number). A green value g > 0 multiplies the
    B-then-A answer by g (an order-sensitive model). ``gate``, when set to an unset Event, holds each
    call until the test releases it.
    """

    backend = "scripted"
    model_name = "scripted-gap-estimator"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.closed = False

    def estimate(self, items, samples: int = 1) -> list[Estimate]:
        self.calls.append(([q.text for _, q in items], samples))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(20), "the test never released the scripted model"
        out = []
        for index, (frame, query) in enumerate(items):
            value = int(frame.rgb[0, 0, 0])
            factor = int(frame.rgb[0, 0, 1]) if index % 2 else 0
            cm = value * factor if factor else value
            text = "I cannot tell from this image." if value == 0 else f"The gap is about {cm} cm wide."
            out.append(combine_answers(query, [text] * samples))
        return out

    def close(self) -> None:
        self.closed = True


def frame_with(cm: int, factor: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    rgb = np.full((h, w, 3), 90, np.uint8)
    rgb[0, 0, 0] = cm
    rgb[0, 0, 1] = factor
    return rgb


class Planner(Node):
    """Plays the camera and a navigation planner: images and queries out, answers in, check_gap."""

    def __init__(self, name: str = "test_planner") -> None:
        super().__init__(name)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, "image", QoSProfile(depth=5))
        self.query_pub = self.create_publisher(String, "affordance/query", reliable)
        self.answers: list[dict] = []
        self._lock = threading.Lock()
        self.create_subscription(String, "affordance/answer", self._on_answer, reliable)
        self.check_gap_client = self.create_client(Trigger, "check_gap")

    def _on_answer(self, msg: String) -> None:
        with self._lock:
            self.answers.append(json.loads(msg.data))

    def send_frame(self, rgb: np.ndarray, sec: int, frame_id: str = "cam") -> None:
        msg = Image(**rgb_to_image_fields(rgb, "rgb8"))
        msg.header.stamp.sec = sec
        msg.header.frame_id = frame_id
        self.image_pub.publish(msg)

    def ask(self, payload: str | dict) -> None:
        self.query_pub.publish(String(data=payload if isinstance(payload, str) else json.dumps(payload)))

    def answers_for(self, request_id: str) -> list[dict]:
        with self._lock:
            return [a for a in self.answers if a["id"] == request_id]

    def from_source(self, source: str) -> list[dict]:
        with self._lock:
            return [a for a in self.answers if a["source"] == source]

    def wait_answer(self, request_id: str, timeout: float = 10.0) -> dict:
        wait_for(lambda: self.answers_for(request_id), timeout, f"the answer to {request_id!r}")
        return self.answers_for(request_id)[0]

    def check_gap_async(self):
        wait_for(self.check_gap_client.service_is_ready, what="check_gap ready")
        return self.check_gap_client.call_async(Trigger.Request())

    def check_gap(self, timeout: float = 10.0) -> tuple[bool, dict]:
        future = self.check_gap_async()
        wait_for(future.done, timeout, "the check_gap response")
        response = future.result()
        return response.success, json.loads(response.message)




@pytest.fixture
def harness(ros, request):
    """An AffordanceNode with a scripted estimator and a planner node, both spinning."""
    overrides = getattr(request, "param", {})
    estimator = ScriptedGapEstimator()
    node = AffordanceNode(estimator=estimator, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    planner = Planner()
    spinner = Spinner(node, planner)
    wait_for(lambda: planner.image_pub.get_subscription_count() > 0, what="node subscribed to image")
    wait_for(lambda: planner.query_pub.get_subscription_count() > 0, what="node subscribed to queries")
    wait_for(lambda: node.answer_pub.get_subscription_count() > 0, what="planner subscribed to answers")
    yield node, planner, estimator
    if estimator.gate is not None:
        estimator.gate.set()
    spinner.stop()
    node.close()
    node.destroy_node()
    planner.destroy_node()


def give_frame(node: AffordanceNode, planner: Planner, rgb: np.ndarray, sec: int) -> None:
    planner.send_frame(rgb, sec)
    wait_for(lambda: (f := node.newest_frame()) is not None and f.header.stamp.sec == sec,
             what=f"the node to hold frame {sec}")


def test_parameter_template_default_is_the_core_default():
    # params.py cannot import the core (the core imports params.py), so the text is written twice.
    assert AFFORDANCE_PARAMS["gap.question_template"].default == DEFAULT_GAP_TEMPLATE
    assert AFFORDANCE_PARAMS["diagnostics_period_s"] == REWARD_PARAMS["diagnostics_period_s"]


def test_query_answer_round_trip_plain_words_and_json(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(150), 11)
    planner.ask({"id": "q1", "question": "Can a 0.6 m wide robot pass between the sofa and the table?"})
    answer = planner.wait_answer("q1")
    assert answer["source"] == "query"
    assert (answer["object_a"], answer["object_b"]) == ("the sofa", "the table")
    assert answer["gap_width_m"] == pytest.approx(1.5)
    assert answer["clearance_m"] == pytest.approx(0.9)
    assert answer["fits"] is True and answer["consistent"] is True
    assert answer["answer"] == "Yes: the gap is roughly 1.5 m, 90 cm wider than the robot."
    assert answer["stamp"] == {"sec": 11, "nanosec": 0} and answer["frame_id"] == "cam"
    assert answer["latency_ms"] >= 0 and answer["frame_age_s"] >= 0
    assert (answer["backend"], answer["model"]) == ("scripted", "scripted-gap-estimator")
    assert [s["order"] for s in answer["steps"]] == ["a_then_b", "b_then_a"]
    assert answer["steps"][0]["raw_answers"] == ["The gap is about 150 cm wide."]
    # both object orders in one batched call, with the configured template
    assert estimator.calls[-1] == ([DEFAULT_GAP_TEMPLATE.format(a="the sofa", b="the table"),
                                    DEFAULT_GAP_TEMPLATE.format(a="the table", b="the sofa")], 1)

    # JSON fields; no width given: the node's robot_width_m and safety_margin_m apply
    planner.ask({"id": "q2", "object_a": "the bin", "object_b": "the door"})
    answer = planner.wait_answer("q2")
    assert (answer["robot_width_m"], answer["safety_margin_m"]) == (0.6, 0.1)
    assert answer["fits"] is True

    # plain words without an id: answered with id "" and the question as asked
    give_frame(node, planner, frame_with(70), 12)
    question = "Can a 65 cm wide robot get between the chair and the wall?"
    planner.ask(question)
    wait_for(lambda: planner.answers_for(""), what="the answer to the plain-words question")
    answer = planner.answers_for("")[0]
    assert answer["question"] == question and answer["stamp"]["sec"] == 12
    assert answer["clearance_m"] == pytest.approx(0.05) and answer["fits"] is False
    assert "safety margin is 10 cm" in answer["answer"]

    # an order-sensitive answer: the disagreement is reported, not hidden
    give_frame(node, planner, frame_with(100, factor=3), 13)
    planner.ask({"id": "q3", "object_a": "the sofa", "object_b": "the table", "robot_width_m": 0.5})
    answer = planner.wait_answer("q3")
    assert answer["consistent"] is False and "disagree" in answer["answer"]
    assert answer["gap_width_m"] == pytest.approx(2.0)  # mean of 1 m and 3 m
    assert all(len(planner.answers_for(i)) == 1 for i in ("q1", "q2", "q3", ""))


def test_check_gap_without_and_with_a_frame(harness):
    node, planner, _ = harness
    success, answer = planner.check_gap()
    assert success is False
    assert answer["fits"] is None and "no camera frame received yet" in answer["reason"]
    assert answer["stamp"] is None and answer["id"].startswith("check_gap-")
    assert answer["answer"].startswith("Unknown: could not measure the gap between the sofa and the table")

    give_frame(node, planner, frame_with(100), 21)
    success, answer = planner.check_gap()
    assert success is True
    assert answer["gap_width_m"] == pytest.approx(1.0) and answer["clearance_m"] == pytest.approx(0.4)
    assert answer["fits"] is True and answer["stamp"] == {"sec": 21, "nanosec": 0}
    assert answer["source"] == "check_gap" and answer["reason"] is None
    # check_gap answers are published too, under their own id
    assert planner.wait_answer(answer["id"])["gap_width_m"] == pytest.approx(1.0)

    give_frame(node, planner, frame_with(70), 22)  # clearance exactly the margin: fits
    success, answer = planner.check_gap()
    assert success is True and answer["fits"] is True and answer["clearance_m"] == pytest.approx(0.1)

    give_frame(node, planner, frame_with(0), 23)  # the model says no number: not answered
    success, answer = planner.check_gap()
    assert success is False and answer["fits"] is None and answer["gap_width_m"] is None
    assert "no distance in the model's answer" in answer["reason"]
    assert answer["steps"][0]["raw_answers"] == ["I cannot tell from this image."]


@pytest.mark.parametrize("harness", [{"max_frame_age_s": 0.3}], indirect=True)
def test_stale_frames_are_refused_by_receive_time(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 31)
    received = node.newest_frame().received_monotonic_s
    wait_for(lambda: time.monotonic() - received > 0.35, what="the frame to go stale")
    calls = len(estimator.calls)
    success, answer = planner.check_gap()
    assert success is False and "max_frame_age_s (0.3 s)" in answer["reason"]
    assert answer["stamp"] == {"sec": 31, "nanosec": 0}  # the frame that was too old
    planner.ask({"id": "s1", "object_a": "the sofa", "object_b": "the table"})
    assert "max_frame_age_s" in planner.wait_answer("s1")["reason"]
    assert len(estimator.calls) == calls, "a stale frame must not reach the model"

    give_frame(node, planner, frame_with(100), 32)  # a fresh frame is answered again
    assert planner.check_gap()[0] is True
    assert node.set_parameters([Parameter("max_frame_age_s", value=0.0)])[0].successful
    received = node.newest_frame().received_monotonic_s
    wait_for(lambda: time.monotonic() - received > 0.35, what="the frame to age")
    assert planner.check_gap()[0] is True  # 0: any age


def test_parameter_changes_at_run_time_and_refusals(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 41)
    results = node.set_parameters([
        Parameter("gap.object_a", value="the chair"), Parameter("gap.object_b", value="the wall"),
        Parameter("robot_width_m", value=0.95), Parameter("safety_margin_m", value=0.0),
        Parameter("gap.question_template", value="Measure the free space between {a} and {b}."),
        Parameter("samples_per_frame", value=3),
    ])
    assert all(r.successful for r in results), [r.reason for r in results]
    success, answer = planner.check_gap()
    assert success is True
    assert (answer["object_a"], answer["object_b"]) == ("the chair", "the wall")
    assert answer["robot_width_m"] == 0.95 and answer["safety_margin_m"] == 0.0
    assert answer["clearance_m"] == pytest.approx(0.05) and answer["fits"] is True
    assert estimator.calls[-1] == (["Measure the free space between the chair and the wall.",
                                    "Measure the free space between the wall and the chair."], 3)
    assert len(answer["steps"][1]["raw_answers"]) == 3
    # the node's width is the default for queries that state none
    planner.ask({"id": "p1", "question": "Is there room between the bin and the door?"})
    assert planner.wait_answer("p1")["robot_width_m"] == 0.95

    for name, value, words in (
        ("gap.object_a", "The Wall", "same object"),
        ("gap.object_a", "   ", "must not be empty"),
        ("gap.object_b", "the", "names no object"),
        ("gap.question_template", "How wide is {a}?", "must contain {b}"),
        ("gap.question_template", "Gap between {a} and {b} in {unit}?", "unknown field {unit}"),
        ("gap.question_template", "Gap between {a} and {b} }", "not a valid format string"),
        ("robot_width_m", 0.0, "out of range"),
        ("safety_margin_m", -0.1, "out of range"),
        ("gap.max_disagreement_ratio", 0.5, "out of range"),
        ("publish_rate_hz", -1.0, "out of range"),
    ):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, (name, value)
        assert words in result.reason, (name, result.reason)
    for name, value in (("query_queue_size", 2), ("model.name_or_path", "other/model")):
        assert not node.set_parameters([Parameter(name, value=value)])[0].successful, name
    assert node.params["gap.object_a"] == "the chair" and node.params["robot_width_m"] == 0.95
    assert node.params["gap.question_template"] == "Measure the free space between {a} and {b}."

    give_frame(node, planner, frame_with(100, factor=3), 42)
    assert planner.check_gap()[1]["consistent"] is False
    assert node.set_parameters([Parameter("gap.max_disagreement_ratio", value=5.0)])[0].successful
    assert planner.check_gap()[1]["consistent"] is True


MALFORMED = [
    ('{"id": "m1", "object_a": "the sofa"', "", "malformed JSON"),
    ('{"id": "m2", "object_a": "the sofa"}', "m2", "missing field"),
    ('{"id": "m3", "object_a": "the sofa", "object_b": "the table", "robot_width_m": "wide"}', "m3",
     "robot_width_m must be a number"),
    ('{"id": "m4", "object_a": "a", "object_b": "b", "robot_width_m": NaN}', "", "not a number JSON allows"),
    ('{"id": "m5", "object_a": "the sofa", "object_b": "the sofa"}', "m5", "same object"),
    ('{"id": "m6", "colour": "red"}', "m6", "unknown field 'colour'"),
    ('{"id": "m7", "question": "can it fit?"}', "m7", "two objects are needed"),
    ('{"id": 7}', "", "id must be a string"),
    ("[1, 2]", "", "must be an object"),
    ("hello", "", "two objects are needed"),
    ("   ", "", "the question is empty"),
    ("x" * 5000, "", "too long"),
]


def test_malformed_requests_get_one_answer_each_with_the_reason(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 51)
    payloads = [p for p, _, _ in MALFORMED]
    for payload in payloads:
        planner.ask(payload)
    wait_for(lambda: len(planner.answers) >= len(payloads), what="one answer per malformed request")
    answers = planner.answers[: len(payloads)]
    for answer, (payload, request_id, words) in zip(answers, MALFORMED, strict=True):
        assert answer["id"] == request_id, payload[:60]
        assert answer["fits"] is None and answer["gap_width_m"] is None
        assert words in answer["reason"], (payload[:60], answer["reason"])
        assert answer["answer"].startswith("Unknown:")
    assert not estimator.calls, "nothing malformed reaches the model"
    assert node.counts["refused_unreadable"] == len(payloads)
    # the node goes on (with a fresh frame: delivering the twelve answers in process has taken longer
    # than max_frame_age_s here, bench/executor_latency.py, which made the frame of stamp 51 stale)
    give_frame(node, planner, frame_with(100), 52)
    planner.ask({"id": "ok", "object_a": "the sofa", "object_b": "the table"})
    assert planner.wait_answer("ok")["fits"] is True
    assert planner.check_gap()[0] is True


# Any frame age: this test is about the queue, and the in-process executor has taken seconds to deliver
# a burst of answers here (bench/executor_latency.py), which would make the frame stale.
@pytest.mark.parametrize("harness", [{"query_queue_size": 3, "max_frame_age_s": 0.0}], indirect=True)
def test_a_flood_of_queries_is_answered_once_each_in_order(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 61)
    estimator.gate = threading.Event()
    planner.ask({"id": "f0", "object_a": "the sofa", "object_b": "the table"})
    wait_for(estimator.entered.is_set, what="the model to start on f0")
    ids = [f"f{i}" for i in range(1, 13)]
    for request_id in ids:  # 3 fit in the queue, 9 overflow
        planner.ask({"id": request_id, "object_a": "the sofa", "object_b": "the table"})
    wait_for(lambda: len(planner.answers) >= 9, what="the overflow answers")
    busy = [a["id"] for a in planner.answers]
    assert busy == ids[3:], "overflow answered at once, in order"
    assert all(a["reason"].startswith("busy: 3 queries queued") and a["fits"] is None
               for a in planner.answers)
    # check_gap while the queue is full: refused at once, not after its timeout
    started = time.monotonic()
    success, answer = planner.check_gap(timeout=5.0)
    assert success is False and answer["reason"].startswith("busy: 3 queries queued")
    assert time.monotonic() - started < 5.0

    estimator.gate.set()
    wait_for(lambda: all(planner.answers_for(i) for i in ["f0", *ids]), 15, "every query answered")
    measured = [a["id"] for a in planner.answers if a["fits"] is not None and a["source"] == "query"]
    assert measured == ["f0", "f1", "f2", "f3"], "queued queries are answered in arrival order"
    assert all(len(planner.answers_for(i)) == 1 for i in ["f0", *ids]), "exactly one answer each"
    assert node.counts["refused_busy"] == 10
    assert planner.check_gap()[0] is True  # and the node is still serving


def test_check_gap_waits_without_blocking_the_executor_and_times_out(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 71)
    estimator.gate = threading.Event()
    future = planner.check_gap_async()
    wait_for(estimator.entered.is_set, what="the model to start on check_gap")
    # while check_gap waits for the model: parameters, frames and refusals are still served
    assert node.set_parameters([Parameter("gap.object_b", value="the door")])[0].successful
    planner.ask("not a gap question")
    wait_for(lambda: planner.answers_for(""), what="a refusal while check_gap waits")
    give_frame(node, planner, frame_with(120), 72)
    assert not future.done()
    estimator.gate.set()
    wait_for(future.done, 10, "check_gap after the model answered")
    assert future.result().success is True

    # a timeout: the call is not answered in time; a query still waiting is withdrawn
    estimator.gate = threading.Event()
    estimator.entered.clear()
    assert node.set_parameters([Parameter("check_gap_timeout_s", value=0.5)])[0].successful
    planner.ask({"id": "busy-model", "object_a": "the sofa", "object_b": "the table"})
    wait_for(estimator.entered.is_set, what="the model to start on a query")
    calls = len(estimator.calls)
    success, answer = planner.check_gap(timeout=5.0)
    assert success is False and "timed out after 0.5 s" in answer["reason"]
    assert "will still be published" not in answer["reason"]  # withdrawn while queued
    estimator.gate.set()
    assert planner.wait_answer("busy-model")["fits"] is True
    assert planner.check_gap()[0] is True
    assert len(estimator.calls) == calls + 1, "the withdrawn check_gap never reached the model"
    assert node.counts["check_gap_timeouts"] == 1


def test_periodic_answers_follow_publish_rate_hz(harness):
    node, planner, estimator = harness
    give_frame(node, planner, frame_with(100), 81)
    assert node.set_parameters([Parameter("publish_rate_hz", value=20.0)])[0].successful
    wait_for(lambda: len(planner.from_source("periodic")) >= 3, what="periodic answers")
    answer = planner.from_source("periodic")[0]
    assert answer["id"].startswith("periodic-") and answer["fits"] is True

    # a slow model: one periodic query at a time, the others are skipped, never queued
    estimator.gate = threading.Event()
    estimator.entered.clear()
    wait_for(estimator.entered.is_set, what="a periodic query on the model")
    skipped = node.counts["periodic_skipped"]
    wait_for(lambda: node.counts["periodic_skipped"] >= skipped + 3, what="ticks skipped while busy")
    assert node._queue.qsize() == 0
    estimator.gate.set()

    assert node.set_parameters([Parameter("publish_rate_hz", value=0.0)])[0].successful
    assert node._periodic_timer is None
    wait_for(lambda: node._periodic is None or node._periodic.done.is_set(), what="the last periodic")
    count = len(planner.from_source("periodic"))
    planner.ask({"id": "after", "object_a": "the sofa", "object_b": "the table"})
    planner.wait_answer("after")
    assert planner.check_gap()[0] is True
    assert len(planner.from_source("periodic")) == count


def test_diagnostics(harness):
    from diagnostic_msgs.msg import DiagnosticArray

    node, planner, _ = harness
    got: list[DiagnosticArray] = []
    planner.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    give_frame(node, planner, frame_with(100), 91)
    assert planner.check_gap()[0] is True

    def values() -> dict[str, str]:
        for array in reversed(got):
            for status in array.status:
                if status.name.endswith(": affordance"):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    wait_for(lambda: values().get("measured") == "1", 5, "diagnostics after one answer")
    assert {"queries_received", "refused_busy", "queued", "median_latency_ms", "frame_age_s",
            "frames_received", "check_gap_timeouts", "last_error"} <= set(values())


def test_close_stops_the_worker_and_frees_the_estimator(harness):
    node, _, estimator = harness
    node.close()
    assert estimator.closed
    assert not any(t.name == "affordance-worker" and t.is_alive() for t in threading.enumerate())


# ------------------------------------------------------------------ one process, one model


class CountingBuild:
    def __init__(self) -> None:
        self.built: list[object] = []

    def __call__(self, config):
        estimator = ScriptedGapEstimator()
        self.built.append(config)
        return estimator


def test_reward_and_affordance_nodes_share_one_model(ros, monkeypatch):
    """What spatialvlm_node does: both nodes in one process; equal model.* -> one estimator, loaded once."""
    build = CountingBuild()
    monkeypatch.setattr(estimator_module, "build_estimator", build)
    model = [Parameter("model.name_or_path", value="/models/shared"), Parameter("model.device", value="cpu")]
    reward = RewardNode(parameter_overrides=model)
    affordance = AffordanceNode(parameter_overrides=model)
    other = AffordanceNode(parameter_overrides=[*model, Parameter("model.max_new_tokens", value=8)],
                           namespace="other")
    try:
        assert affordance.estimator is reward.estimator
        assert other.estimator is not reward.estimator
        assert len(build.built) == 2  # the shared copy once, the differing one once
        inner = reward.estimator.inner
        reward.close()
        assert not inner.closed, "still used by the affordance node"
        affordance.close()
        assert inner.closed
    finally:
        other.close()
        for node in (reward, affordance, other):
            node.destroy_node()


# ------------------------------------------------------------------ the executables, as users start them


def _planner_in_this_process(name: str) -> tuple[Planner, Spinner]:
    planner = Planner(name)
    return planner, Spinner(planner)


@pytest.mark.slow
def test_check_gap_from_another_process_with_the_shipped_model(ros):
    """affordance_node as users start it, with the shipped tiny spatial model, asked about the demo
    camera's scene; this test process is the planner. The model's gap answers are its weakest (see
    README), so the test asks for a number from both object orders, a decision that follows from that
    number, and a gap of the right size (within [0.5x, 2x] of the scene's true gap)."""
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    scene = ApproachScene(frames=2)
    frame = scene.render(0)
    a, b = "the orange cylinder", "the blue cylinder"
    true_gap_m = frame.scene.gap(a, b).width_m
    proc = start_process([str(VENV_BIN / "affordance_node"), "--ros-args",
                          "-p", "model.name_or_path:=builtin:tiny-spatial", "-p", "model.max_new_tokens:=16",
                          "-p", "max_frame_age_s:=0.0", "-p", f"gap.object_a:={a}", "-p", f"gap.object_b:={b}",
                          "-p", "robot_width_m:=0.1", "-p", "safety_margin_m:=0.02"])
    planner, spinner = _planner_in_this_process("shipped_planner")
    try:
        wait_for(planner.check_gap_client.service_is_ready, 90, "affordance_node's check_gap service")
        success, answer = planner.check_gap()
        assert success is False and "no camera frame received yet" in answer["reason"]

        wait_for(lambda: planner.image_pub.get_subscription_count() > 0, 10, "image subscription")
        deadline = time.monotonic() + 30
        while True:  # the camera subscription is best-effort: send until the node has a frame
            planner.send_frame(frame.rgb, 1001, "demo_cam")
            success, answer = planner.check_gap(timeout=60.0)
            if answer["stamp"] is not None or time.monotonic() > deadline:
                break
        assert answer["stamp"] == {"sec": 1001, "nanosec": 0} and answer["frame_id"] == "demo_cam"
        assert answer["backend"] == "vlm" and answer["model"] == "builtin:tiny-spatial"
        assert [len(s["raw_answers"]) for s in answer["steps"]] == [1, 1]  # the model ran, both orders
        assert success is True, answer
        gap = answer["gap_width_m"]
        assert gap is not None and 0.5 <= gap / true_gap_m <= 2.0, (gap, true_gap_m, answer)
        assert answer["clearance_m"] == pytest.approx(gap - 0.1)
        assert answer["fits"] is (answer["clearance_m"] >= 0.02 - 1e-9)

        wait_for(lambda: planner.query_pub.get_subscription_count() > 0, 10, "query subscription")
        planner.ask({"id": "remote-1", "question": f"Can a 60 cm wide robot pass between {a} and {b}?"})
        remote = planner.wait_answer("remote-1", 30)
        assert remote["robot_width_m"] == 0.6 and remote["stamp"]["sec"] == 1001
        # The same frame and objects: the same measured gap, and a 60 cm robot does not fit a gap the
        # model measured at under 62 cm.
        assert remote["gap_width_m"] == pytest.approx(gap)
        assert remote["fits"] is (gap - 0.6 >= 0.02 - 1e-9)
    finally:
        spinner.stop()
        planner.destroy_node()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "ready: backend=vlm" in out


@pytest.mark.slow
def test_combined_executable_hosts_both_nodes_on_one_model(ros, tiny_qwen_dir):
    proc = start_process([str(VENV_BIN / "spatialvlm_node"), "--ros-args",
                          "-p", f"model.name_or_path:={tiny_qwen_dir}", "-p", "model.max_new_tokens:=4"])
    planner, spinner = _planner_in_this_process("combined_planner")
    reset = planner.create_client(Trigger, "reset")
    try:
        wait_for(planner.check_gap_client.service_is_ready, 90, "check_gap in the combined process")
        wait_for(reset.service_is_ready, 10, "reset in the combined process")
        future = reset.call_async(Trigger.Request())
        wait_for(future.done, 10, "reset response")
        assert future.result().success
        success, answer = planner.check_gap()
        assert success is False and "no camera frame" in answer["reason"]
    finally:
        spinner.stop()
        planner.destroy_node()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "one model copy shared with spatialvlm_reward" in out

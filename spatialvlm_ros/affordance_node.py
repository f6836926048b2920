"""affordance_node (``spatialvlm_affordance``): "can the robot pass between A and B?" by topic and service.

Thin by design: the camera input keeps the newest frame; queries (``affordance/query``, ``check_gap``, the
optional timer) wait in a bounded FIFO served in order by one worker thread, which asks the estimator
through the core (``spatial/affordance.py``) and publishes the answer with the stamp of the frame it was
answered on. The executor thread never runs the model.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.timer import Timer
from std_msgs.msg import String
from std_srvs.srv import Trigger

from spatialvlm_ros.camera_input import CameraFrame, CameraInput, arrival_values, stamp_dict
from spatialvlm_ros.debug_output import DebugOutputs, debug_outputs_for
from spatialvlm_ros.node_support import (
    ModelPhases,
    NodeParams,
    StartupError,
    ThrottledLog,
    estimator_problem,
    publish_diagnostics,
    run_nodes,
    to_json,
)
from spatialvlm_ros.params import AFFORDANCE_PARAMS
from spatialvlm_ros.spatial.affordance import (
    MAX_QUESTION_CHARS,
    GapAnswer,
    GapQuery,
    GapQuestionError,
    gap_answer_from_estimates,
    gap_queries,
    parse_gap_request,
    validate_gap_template,
)
from spatialvlm_ros.spatial.cross_check import cross_check_report
from spatialvlm_ros.spatial.estimator import Estimator
from spatialvlm_ros.spatial.stamp_sync import SyncPolicy

NODE_NAME = "spatialvlm_affordance"
# Answers can come in bursts (a flood of queries is refused at once, one answer each): keep them all.
ANSWER_QUEUE_DEPTH = 100
QUERY_QUEUE_DEPTH = 100
# How long close() waits for an answer the model is still computing before giving up on it.
WORKER_JOIN_TIMEOUT_S = 1.0  # then a log line says why shutdown waits


@dataclass
class PendingQuery:
    """A query waiting for (or being answered by) the worker; ``done`` is set with ``answer``.

    ``query`` is None for a request that could not be read (it is answered at once, never queued).
    """

    query: GapQuery | None
    source: str  # "query" (the topic), "check_gap" or "periodic"
    received_monotonic_s: float
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    cross_check: dict[str, Any] | None = None  # the other backend's gap, with cross_check on
    _state: str = "queued"  # queued -> started | cancelled
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> bool:
        """Claim the query for the worker; False when it was cancelled while queued."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "started"
            return True

    def cancel(self) -> bool:
        """Withdraw the query if the worker has not started it; False when it already has."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "cancelled"
            return True


class AffordanceNode(ModelPhases, Node):
    """Answers gap questions on the newest frame: ``affordance/query`` -> ``affordance/answer``, ``check_gap``."""

    def __init__(self, estimator: Estimator | None = None, cross_check_estimator: Estimator | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.params = NodeParams(self, AFFORDANCE_PARAMS, on_change=self._on_params)
            problem = self._params_problem(self.params.values)
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            raise StartupError(f"{NODE_NAME}: {exc}") from exc
        self._injected = (estimator, cross_check_estimator)
        self._throttle = ThrottledLog(self.get_logger())
        self._frame_lock = threading.Lock()
        self._newest: CameraFrame | None = None
        self._counter_lock = threading.Lock()
        self._serial = 0  # numbers the ids of check_gap and periodic queries
        self.counts = {"queries_received": 0, "answered": 0, "measured": 0, "refused_busy": 0,
                       "refused_unreadable": 0, "check_gap_timeouts": 0, "periodic_skipped": 0}
        self._latencies_ms: deque[float] = deque(maxlen=100)
        self._last_error: str | None = None
        self._periodic: PendingQuery | None = None
        self._periodic_timer: Timer | None = None
        # Why queries are refused while no worker runs (None while active).
        self._inactive: str | None = "the node is not active (a managed node answers once activated)"
        self.camera: CameraInput | None = None
        self.debug: DebugOutputs | None = None
        self._worker: threading.Thread | None = None
        self._query_sub: Any = None
        self._diag_timer: Any = None

        if not self.managed:
            # Before any service appears: a client that sees one is answered at once, not after loading.
            self.load_model()
        self.answer_pub = self.create_publisher(String, "affordance/answer", ANSWER_QUEUE_DEPTH)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The FIFO and its one worker: queries are answered in the order they arrived, one model call
        # at a time, and a full queue refuses at once instead of growing latency without bound.
        self._queue: queue.Queue[PendingQuery] = queue.Queue(maxsize=self.params["query_queue_size"])
        self._stopping = threading.Event()
        self.worker_busy = threading.Event()
        # Topic queries and timer ticks share one mutually exclusive group, so they enter the FIFO in
        # the order they arrived. check_gap blocks its executor thread until the worker answers, so it
        # gets a group of its own: frames, queries and parameters keep flowing on the other threads,
        # and concurrent check_gap calls wait their turn instead of holding every executor thread.
        self._query_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "check_gap", self._on_check_gap,
                            callback_group=MutuallyExclusiveCallbackGroup())
        if not self.managed:  # a managed node loads on configure and starts on activate (managed.py)
            self.start_work()

    # ------------------------------------------------------------------ phases (managed.py drives them)
    def start_work(self) -> None:
        """Start the worker and subscribe the camera and the queries, on the loaded model."""
        assert self.estimator is not None, "load_model() first"
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run_worker, args=(self._stopping,),
                                        name="affordance-worker", daemon=True)
        self._worker.start()
        self.debug = debug_outputs_for(self, self.estimator, self.params.values)
        self._query_sub = self.create_subscription(String, "affordance/query", self._on_query, QUERY_QUEUE_DEPTH,
                                                   callback_group=self._query_group)
        self.camera = CameraInput(self, self.params["image_transport"], self._on_frame, self._on_bad_frame,
                                  callback_group=MutuallyExclusiveCallbackGroup(),
                                  sync=SyncPolicy.from_params(self.params.values))
        self._inactive = None
        self._set_periodic_rate(self.params["publish_rate_hz"])
        self._diag_timer = self.create_timer(self.params["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(
            f"ready: backend={self.estimator.backend} model={self.estimator.model_name} "
            f"gap=({self.params['gap.object_a']!r}, {self.params['gap.object_b']!r}) "
            f"robot_width_m={self.params['robot_width_m']:g}")

    def stop_work(self, reason: str = "the node was deactivated") -> None:
        """Stop taking queries and frames; what is still queued is answered with ``reason``. The model
        stays loaded."""
        self._inactive = reason
        self._stopping.set()
        worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(WORKER_JOIN_TIMEOUT_S)
            if worker.is_alive():  # the model may be freed next: never under a running call
                self.get_logger().info("waiting for the model call in progress to finish "
                                       "(Ctrl-C again to exit now)")
                worker.join()
        self._worker = None
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending.start():
                try:
                    self._deliver(pending, GapAnswer.refusal(reason, query=pending.query), None, None)
                except Exception:  # noqa: BLE001 - the context may already be gone; waiters are released
                    pass
        self._set_periodic_rate(0.0)
        for part in (self.camera, self.debug):
            if part is not None:
                part.destroy()
        self.camera = self.debug = None
        if self._query_sub is not None:
            self.destroy_subscription(self._query_sub)
            self._query_sub = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        with self._frame_lock:
            self._newest = None  # a frame from before the pause must not be answered after it

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _configured_gap(values: dict[str, Any], request_id: str = "") -> GapQuery:
        return GapQuery(request_id, values["gap.object_a"], values["gap.object_b"],
                        values["robot_width_m"], values["safety_margin_m"])

    def _params_problem(self, values: dict[str, Any]) -> str | None:
        problem = validate_gap_template(values["gap.question_template"])
        if problem:
            return f"gap.question_template: {problem}"
        try:
            self._configured_gap(values)
        except GapQuestionError as exc:
            # GapQuery names object_a/object_b; the parameters are gap.object_a/gap.object_b.
            return f"the configured gap (gap.object_a, gap.object_b, robot_width_m, safety_margin_m): {exc.reason}"
        return None

    def _on_params(self, new: dict[str, Any]) -> str | None:
        problem = self._params_problem(new)
        if problem:
            return problem
        if new["publish_rate_hz"] != self.params["publish_rate_hz"] and self._inactive is None:
            self._set_periodic_rate(new["publish_rate_hz"])
        return None

    def _set_periodic_rate(self, rate_hz: float) -> None:
        if self._periodic_timer is not None:
            self.destroy_timer(self._periodic_timer)
            self._periodic_timer = None
        if rate_hz > 0:
            self._periodic_timer = self.create_timer(1.0 / rate_hz, self._on_periodic,
                                                     callback_group=self._query_group)

    def _next_id(self, prefix: str) -> str:
        with self._counter_lock:
            self._serial += 1
            return f"{prefix}-{self._serial}"

    def _count(self, name: str) -> None:
        with self._counter_lock:
            self.counts[name] += 1

    # ------------------------------------------------------------------ frames
    def _on_frame(self, item: CameraFrame) -> None:
        with self._frame_lock:
            self._newest = item

    def _on_bad_frame(self, header: Any, reason: str) -> None:
        self._last_error = reason
        self._throttle.warn("bad_frame", f"frame skipped: {reason}")

    def newest_frame(self) -> CameraFrame | None:
        with self._frame_lock:
            return self._newest

    def _frame_problem(self, item: CameraFrame | None, now: float) -> str | None:
        """Why ``item`` cannot be measured now, or None. Age is by this node's steady clock."""
        if item is None:
            return "no camera frame received yet; is `image` remapped to the camera topic?"
        max_age_s = self.params["max_frame_age_s"]
        age_s = now - item.received_monotonic_s
        if max_age_s > 0 and age_s > max_age_s:
            return (f"the newest frame arrived {age_s:.1f} s ago, more than max_frame_age_s "
                    f"({max_age_s:g} s); is the camera still publishing?")
        return None

    # ------------------------------------------------------------------ queries in
    def _on_query(self, msg: String) -> None:
        received = time.monotonic()
        self._count("queries_received")
        values = self.params.values
        try:
            query = parse_gap_request(msg.data, values["robot_width_m"], values["safety_margin_m"])
        except GapQuestionError as exc:
            self._refuse_unreadable(msg.data, exc.reason, exc.request_id, received)
            return
        except Exception as exc:  # noqa: BLE001 - nothing a planner sends may stop the node
            self._refuse_unreadable(msg.data, f"could not read the request ({type(exc).__name__}: {exc})",
                                    "", received)
            return
        self._submit(query, "query", received)

    def _refuse_unreadable(self, payload: str, reason: str, request_id: str, received: float) -> None:
        self._count("refused_unreadable")
        self._throttle.warn("unreadable", f"query refused: {reason}")
        stripped = payload.strip()
        question = "" if stripped.startswith(("{", "[")) else " ".join(stripped.split())[:MAX_QUESTION_CHARS]
        answer = GapAnswer.refusal(reason, request_id=request_id, question=question)
        self._deliver(PendingQuery(None, "query", received), answer, None, None)

    def _submit(self, query: GapQuery, source: str, received: float) -> PendingQuery:
        """Queue ``query`` for the worker, or answer it at once when it cannot be measured now."""
        pending = PendingQuery(query, source, received)
        item = self.newest_frame()
        problem = self._inactive or self._frame_problem(item, received)
        if problem is None:
            try:
                self._queue.put_nowait(pending)
                return pending
            except queue.Full:
                self._count("refused_busy")
                problem = (f"busy: {self._queue.maxsize} queries queued (query_queue_size); "
                           "ask again when earlier answers have arrived")
                self._throttle.warn("busy", f"query refused: {problem}")
        pending.start()
        self._deliver(pending, GapAnswer.refusal(problem, query=query), item, received)
        return pending

    def _on_check_gap(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        received = time.monotonic()
        query = self._configured_gap(self.params.values, self._next_id("check_gap"))
        pending = self._submit(query, "check_gap", received)
        timeout_s = self.params["check_gap_timeout_s"]
        # Blocks this callback's thread only (its own group on a multi-threaded executor).
        if not pending.done.wait(timeout_s) and not pending.done.is_set():
            self._count("check_gap_timeouts")
            withdrawn = pending.cancel()
            reason = (f"timed out after {timeout_s:g} s waiting for the model (check_gap_timeout_s)"
                      + ("" if withdrawn else "; the answer will still be published on affordance/answer"))
            self._throttle.warn("timeout", f"check_gap: {reason}")
            answer = self._answer_dict(pending, GapAnswer.refusal(reason, query=query), None, None)
        else:
            answer = pending.answer or {}
        # success means "answered": a gap width was measured and fits is true or false. Every other
        # outcome (no frame, stale frame, busy, timeout, no number in the model's answer) is
        # success=false; the message is the JSON answer either way, its "reason" says why.
        response.success = answer.get("fits") is not None
        response.message = to_json(answer)
        return response

    def _on_periodic(self) -> None:
        previous = self._periodic
        if previous is not None and not previous.done.is_set():
            # One periodic query at a time: a slow model must not fill the queue with them.
            self._count("periodic_skipped")
            return
        received = time.monotonic()
        query = self._configured_gap(self.params.values, self._next_id("periodic"))
        self._periodic = self._submit(query, "periodic", received)

    # ------------------------------------------------------------------ the worker
    def _run_worker(self, stopping: threading.Event) -> None:
        from spatialvlm_ros.spatial.cpu_runtime import lower_thread_priority

        problem = lower_thread_priority(self.params["worker_nice"])
        if problem:
            self.get_logger().warning(problem)
        while not stopping.is_set():
            try:
                pending = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not pending.start():
                continue  # check_gap gave up on it while it waited
            self.worker_busy.set()
            try:
                self._answer(pending)
            finally:
                self.worker_busy.clear()

    def _answer(self, pending: PendingQuery) -> None:
        query = pending.query
        if query is None:  # only readable queries are queued
            return
        now = time.monotonic()
        item = self.newest_frame()
        # Re-checked here: the frame may have gone stale while the query waited in the queue.
        problem = self._frame_problem(item, now)
        if problem is not None or item is None:
            self._deliver(pending, GapAnswer.refusal(problem or "no frame", query=query), item, now)
            return
        self.camera.complete(item)  # joins the depth / camera_info stamped like this frame
        values = self.params.values
        estimates: list = []
        try:
            questions = gap_queries(query, values["gap.question_template"])
            estimator = self.estimator
            assert estimator is not None  # the worker runs only between start_work and stop_work
            estimates = estimator.estimate([(item.frame, q) for q in questions],
                                           samples=values["samples_per_frame"])
            answer = gap_answer_from_estimates(query, estimates,
                                               values["gap.max_disagreement_ratio"])
            if self.cross_estimator is not None:
                pending.cross_check = self._cross_check(item, query, questions, answer.gap_width_m)
        except Exception as exc:  # noqa: BLE001 - every query gets an answer, and the worker survives
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._throttle.warn("worker", f"query not measured, the estimator raised: {self._last_error}")
            answer = GapAnswer.refusal(f"the estimator failed: {self._last_error}", query=query)
        if answer.fits is None and answer.reason:
            self._last_error = answer.reason
        self._deliver(pending, answer, item, now)
        debug = self.debug
        if debug is not None and estimates and debug.wanted():
            debug.publish(item.header, item.frame, [query.question or estimates[0].query.text, answer.answer],
                          estimates)

    def _cross_check(self, item: CameraFrame, query: GapQuery, questions: list,
                     primary_m: float | None) -> dict[str, Any]:
        other = self.cross_estimator
        assert other is not None
        values = self.params.values
        try:
            estimates = other.estimate([(item.frame, q) for q in questions], samples=values["samples_per_frame"])
            checked = gap_answer_from_estimates(query, estimates, values["gap.max_disagreement_ratio"])
        except Exception as exc:  # noqa: BLE001 - the check must never cost the query its answer
            return cross_check_report(primary_m, None, other.backend, other.model_name, key="gap_width_m",
                                      error=f"the estimator raised {type(exc).__name__}: {exc}")
        return cross_check_report(primary_m, checked.gap_width_m, other.backend, other.model_name,
                                  key="gap_width_m", raw_answers=[checked.answer], error=checked.reason)

    # ------------------------------------------------------------------ answers out
    def _answer_dict(self, pending: PendingQuery, answer: GapAnswer, item: CameraFrame | None,
                     measured_at: float | None) -> dict[str, Any]:
        body = answer.to_dict()
        latency_ms = (time.monotonic() - pending.received_monotonic_s) * 1e3
        frame_age_s = None
        if item is not None and measured_at is not None:
            frame_age_s = round(max(0.0, measured_at - item.received_monotonic_s), 3)
        body.update(
            source=pending.source,
            stamp=stamp_dict(item.header) if item is not None else None,
            frame_id=item.header.frame_id if item is not None else None,
            frame_age_s=frame_age_s,
            latency_ms=round(latency_ms, 2),
            backend=getattr(self.estimator, "backend", None),
            model=getattr(self.estimator, "model_name", None),
        )
        if pending.cross_check is not None:
            body["cross_check"] = pending.cross_check
        if item is not None and item.depth_error:
            body["warning"] = item.depth_error
        return body

    def _deliver(self, pending: PendingQuery, answer: GapAnswer, item: CameraFrame | None,
                 measured_at: float | None) -> None:
        body = self._answer_dict(pending, answer, item, measured_at)
        self._count("answered")
        if body["fits"] is not None:
            self._count("measured")
            self._latencies_ms.append(body["latency_ms"])
        pending.answer = body
        try:
            self.answer_pub.publish(String(data=to_json(body)))
        finally:
            pending.done.set()  # a waiting check_gap gets its answer even if publishing failed

    # ------------------------------------------------------------------ diagnostics and shutdown
    def _publish_diagnostics(self) -> None:
        with self._counter_lock:
            counts = dict(self.counts)
        latency = statistics.median(self._latencies_ms) if self._latencies_ms else 0.0
        item = self.newest_frame()
        age = "" if item is None else f"{time.monotonic() - item.received_monotonic_s:.2f}"
        problem = self._frame_problem(item, time.monotonic()) or estimator_problem(self.estimator)
        camera = self.camera
        arrivals = camera.arrivals.report() if camera is not None else None
        if arrivals is not None and arrivals.problem:
            problem = f"{problem}; {arrivals.problem}" if problem else arrivals.problem
            self._throttle.warn("transport", arrivals.problem)
        publish_diagnostics(
            self, self.diag_pub, "affordance", ok=not problem, message=problem or "ready to answer",
            hardware_id=getattr(self.estimator, "model_name", ""),
            values={
                **counts,
                **arrival_values(arrivals),
                "queued": self._queue.qsize(),
                "median_latency_ms": f"{latency:.1f}",
                "frame_age_s": age,
                "frames_received": camera.received if camera else 0,
                "frames_bad": camera.bad if camera else 0,
                "last_error": self._last_error,
            })

    def close(self) -> None:
        """Stop the worker, answer what is still queued, free the model (called by main on the way out)."""
        self.stop_work("the node is shutting down")
        self.free_model()


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run_nodes([AffordanceNode]))


if __name__ == "__main__":
    main()

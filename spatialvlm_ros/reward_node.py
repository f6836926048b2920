"""reward_node (``spatialvlm_reward``): the gripper-to-target distance on every camera frame, as an RL reward.

Thin by design: camera input -> newest-frame slot or bounded FIFO (``frame_policy``) -> worker thread asks
the estimator -> reward shaping (core) -> publish with the source image's stamp. The executor thread never
runs the model. Every frame that arrives gets exactly one ``reward_info``: answered, skipped, replaced,
refused or failed, with ``status`` and ``error`` saying which.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import deque
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Float32, String
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
from spatialvlm_ros.params import REWARD_PARAMS
from spatialvlm_ros.spatial.cross_check import cross_check_report
from spatialvlm_ros.spatial.estimator import Estimator
from spatialvlm_ros.spatial.fifo import make_handoff
from spatialvlm_ros.spatial.latest import Worker
from spatialvlm_ros.spatial.questions import distance_query
from spatialvlm_ros.spatial.reward import RewardConfig, RewardShaper
from spatialvlm_ros.spatial.stamp_sync import SyncPolicy

NODE_NAME = "spatialvlm_reward"


class RewardNode(ModelPhases, Node):
    """Publishes ``reward`` and ``reward_stamped`` for each frame the estimator could measure, and one
    ``reward_info`` for every frame it received."""

    def __init__(self, estimator: Estimator | None = None, cross_check_estimator: Estimator | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.params = NodeParams(self, REWARD_PARAMS, on_change=self._on_params)
            self._query = self._make_query(self.params.values)
            self._shaper = RewardShaper(RewardConfig.from_params(self.params.values))
        except ValueError as exc:
            raise StartupError(f"{NODE_NAME}: {exc}") from exc
        self._injected = (estimator, cross_check_estimator)
        self._state_lock = threading.Lock()  # guards the shaper and the query, never held on the model
        self._episode = 0
        self._throttle = ThrottledLog(self.get_logger())
        self._latencies_ms: deque[float] = deque(maxlen=100)
        self._published_times: deque[float] = deque(maxlen=100)
        self._last_error: str | None = None
        self._processed = 0
        self._slot = make_handoff(self.params["frame_policy"], self.params["frame_queue_size"])
        self.camera: CameraInput | None = None
        self.debug: DebugOutputs | None = None
        self._worker: Worker[CameraFrame] | None = None
        self._workers: list[Worker[CameraFrame]] = []
        self._newest_shaped_s = float("-inf")  # receive time of the newest frame that entered the shaper
        self._diag_timer: Any = None

        if not self.managed:
            # Before any service appears: a client that sees one is answered at once, not after loading.
            self.load_model()
        self.reward_pub = self.create_publisher(Float32, "reward", 10)
        # The same reward with the source image's header, for plotting and recording tools (README).
        self.reward_stamped_pub = self.create_publisher(PointStamped, "reward_stamped", 10)
        # Reliable, deep enough for a burst of replaced/refused frames' answers.
        self.info_pub = self.create_publisher(String, "reward_info", 100)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Services get their own group so a burst of frames never delays a reset.
        self.create_service(Trigger, "reset", self._on_reset,
                            callback_group=MutuallyExclusiveCallbackGroup())
        if not self.managed:  # a managed node loads on configure and starts on activate (managed.py)
            self.start_work()

    # ------------------------------------------------------------------ phases (managed.py drives them)
    def start_work(self) -> None:
        """Subscribe the camera and start the worker on the loaded model."""
        assert self.estimator is not None, "load_model() first"
        self._slot = make_handoff(self.params["frame_policy"], self.params["frame_queue_size"])
        self.debug = debug_outputs_for(self, self.estimator, self.params.values)
        every = self.params["frame_policy"] == "every"
        self.camera = CameraInput(self, self.params["image_transport"], self._on_frame, self._on_bad_frame,
                                  callback_group=MutuallyExclusiveCallbackGroup(),
                                  image_queue_depth=self.params["frame_queue_size"] if every else 1,
                                  sync=SyncPolicy.from_params(self.params.values))
        # With frame_policy newest, one worker per request the estimator keeps in flight (the remote
        # backend's model.max_in_flight): each takes the newest frame, so a batching server can answer a
        # faster camera. frame_policy every keeps one worker: its frames are answered in order.
        in_flight = 1 if every else max(1, int(getattr(self.estimator, "max_in_flight", 1)))
        self._workers = [Worker(self._slot, self._process, self._on_worker_error, name=f"reward-worker-{i}",
                                on_start=self._lower_priority) for i in range(in_flight)]
        self._worker = self._workers[0]
        for worker in self._workers:
            worker.start()
        self._diag_timer = self.create_timer(self.params["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(
            f"ready: backend={self.estimator.backend} model={self.estimator.model_name} "
            f"target={self.params['target_object']!r} mode={self.params['reward.mode']}")

    def stop_work(self) -> None:
        """Unsubscribe and stop the worker (the frame in progress finishes); the model stays loaded."""
        for worker in self._workers:
            worker.stop(on_wait=lambda: self.get_logger().info(
                "waiting for the model call in progress to finish (Ctrl-C again to exit now)"))
        self._workers = []
        self._worker = None
        # Frames that were still waiting will never be measured: say so while the context still allows.
        for item in self._slot.drain():
            with contextlib.suppress(Exception):  # the context may already be shut down (Ctrl-C)
                self.info_pub.publish(String(data=to_json(self._info(
                    item.header, status="not_measured", error="the node stopped before this frame was measured"))))
        for part in (self.camera, self.debug):
            if part is not None:
                part.destroy()
        self.camera = self.debug = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    # ------------------------------------------------------------------ parameters and services
    def _make_query(self, values: dict[str, Any]):
        return distance_query(values["question_template"], values["gripper_description"],
                              values["target_object"])

    def _on_params(self, new: dict[str, Any]) -> str | None:
        try:
            query = self._make_query(new)
            reward_config = RewardConfig.from_params(new)
        except ValueError as exc:
            return str(exc)
        with self._state_lock:
            if query != self._query:
                # A different target (or question) makes distances incomparable: new episode.
                self._query = query
                self._shaper.reset()
                self._episode += 1
            self._shaper.reconfigure(reward_config)
        return None

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._state_lock:
            self._shaper.reset()
            self._episode += 1
            episode = self._episode
        response.success = True
        response.message = f"episode {episode} started: smoothing and progress baseline cleared"
        return response

    def _lower_priority(self) -> None:
        from spatialvlm_ros.spatial.cpu_runtime import lower_thread_priority

        problem = lower_thread_priority(self.params["worker_nice"])
        if problem:
            self.get_logger().warning(problem)

    # ------------------------------------------------------------------ frames
    def _info(self, header: Any, **fields: Any) -> dict[str, Any]:
        return {
            "stamp": stamp_dict(header),
            "frame_id": header.frame_id,
            "target": self._query.object_b,
            "question": self._query.text,
            "distance_m": None,
            "raw_distance_m": None,
            "reward": None,
            "success": None,
            "raw_answers": [],
            "details": None,
            "backend": getattr(self.estimator, "backend", None),
            "model": getattr(self.estimator, "model_name", None),
            "latency_ms": None,
            "frames_dropped": self._slot.dropped,
            "episode": self._episode,
            "status": "rewarded",
            "error": None,
            **fields,
        }

    def _on_frame(self, item: CameraFrame) -> None:
        displaced = self._slot.put(item)
        if displaced is None:
            return
        if displaced is item:
            reason = (f"the queue was full: {self._slot.capacity} frames already waited for the model "
                      "(frame_policy every, frame_queue_size)")
            status = "refused"
        else:
            reason = "a newer frame arrived before the model was free (frame_policy newest)"
            status = "dropped"
        self._throttle.warn(status, f"frame {status}, not measured: {reason}")
        self.info_pub.publish(String(data=to_json(self._info(displaced.header, status=status, error=reason))))

    def _on_bad_frame(self, header: Any, reason: str) -> None:
        self._last_error = reason
        self._throttle.warn("bad_frame", f"frame skipped: {reason}")
        self.info_pub.publish(String(data=to_json(self._info(header, status="bad_frame", error=reason))))

    def _on_worker_error(self, item: CameraFrame, exc: BaseException) -> None:
        self._last_error = f"the estimator raised {type(exc).__name__}: {exc}"
        self._throttle.warn("worker", f"frame skipped: {self._last_error}")
        latency_ms = (time.monotonic() - item.received_monotonic_s) * 1e3
        self.info_pub.publish(String(data=to_json(self._info(
            item.header, status="estimator_error", error=self._last_error, latency_ms=round(latency_ms, 2)))))

    def _process(self, item: CameraFrame) -> None:
        self.camera.complete(item)  # joins the depth / camera_info stamped like this frame
        with self._state_lock:
            query = self._query
        samples = self.params["samples_per_frame"]
        estimator = self.estimator
        assert estimator is not None  # the worker runs only between start_work and stop_work
        (estimate,) = estimator.estimate([(item.frame, query)], samples=samples)
        cross = self._cross_check(item, query, samples, estimate.value_m)
        with self._state_lock:
            stale = query != self._query
            # With several frames in flight, an answer that comes back after a newer frame's must not
            # move the progress baseline backwards in time.
            overtaken = item.received_monotonic_s < self._newest_shaped_s
            # An answer about the previous target must not enter the new target's episode.
            step = None if estimate.value_m is None or stale or overtaken else self._shaper.step(estimate.value_m)
            if step is not None:
                self._newest_shaped_s = item.received_monotonic_s
            episode = self._episode
        latency_ms = (time.monotonic() - item.received_monotonic_s) * 1e3
        self._processed += 1
        self._latencies_ms.append(latency_ms)
        info = self._info(
            item.header, raw_answers=estimate.raw_answers, latency_ms=round(latency_ms, 2),
            episode=episode, sample_distances_m=estimate.sample_values_m, details=estimate.details)
        if cross is not None:
            info["cross_check"] = cross
        if stale:
            info["status"] = "target_changed"
            info["error"] = "target_object changed while this frame was measured; not rewarded"
        elif overtaken and estimate.value_m is not None:
            info["status"] = "overtaken"
            info["error"] = "a newer frame was answered first (model.max_in_flight > 1); not rewarded"
        elif step is None:
            info["status"] = "no_distance"
            info["error"] = estimate.reason
            self._last_error = estimate.reason
            self._throttle.warn("no_distance", f"no reward for this frame: {estimate.reason}")
        else:
            info.update(distance_m=step.distance_m, raw_distance_m=step.raw_distance_m,
                        reward=step.reward, success=step.success)
            self.reward_pub.publish(Float32(data=float(step.reward)))
            stamped = PointStamped(header=item.header)
            stamped.point.x, stamped.point.y, stamped.point.z = (
                float(step.reward), float(step.distance_m), float(step.raw_distance_m))
            self.reward_stamped_pub.publish(stamped)
            self._published_times.append(time.monotonic())
        if item.depth_error:
            info["warning"] = item.depth_error
        self.info_pub.publish(String(data=to_json(info)))
        debug = self.debug
        if debug is not None and debug.wanted():
            result = f"reward {step.reward:+.3f}" if step is not None and not stale else f"no reward: {info['error']}"
            debug.publish(item.header, item.frame, [query.text, " / ".join(estimate.raw_answers[:1]), result],
                          [estimate])

    def _cross_check(self, item: CameraFrame, query: Any, samples: int,
                     primary_m: float | None) -> dict[str, Any] | None:
        other = self.cross_estimator
        if other is None:
            return None
        try:
            (estimate,) = other.estimate([(item.frame, query)], samples=samples)
        except Exception as exc:  # noqa: BLE001 - the check must never cost the frame its reward
            return cross_check_report(primary_m, None, other.backend, other.model_name,
                                      error=f"the estimator raised {type(exc).__name__}: {exc}")
        return cross_check_report(primary_m, estimate.value_m, other.backend, other.model_name,
                                  raw_answers=estimate.raw_answers, error=estimate.reason)

    # ------------------------------------------------------------------ diagnostics and shutdown
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        recent = [t for t in self._published_times if now - t <= 10.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        latency = statistics.median(self._latencies_ms) if self._latencies_ms else 0.0
        camera = self.camera
        arrivals = camera.arrivals.report() if camera is not None else None
        problem = estimator_problem(self.estimator)
        message = problem or ("publishing rewards" if recent else "no reward published in the last 10 s")
        if arrivals is not None and arrivals.problem:
            message = f"{message}; {arrivals.problem}"
            self._throttle.warn("transport", arrivals.problem)
        publish_diagnostics(
            self, self.diag_pub, "reward",
            ok=bool(self._processed) and problem is None and not (arrivals and arrivals.problem),
            message=message,
            hardware_id=getattr(self.estimator, "model_name", ""),
            values={
                **arrival_values(arrivals),
                "reward_rate_hz": f"{rate:.2f}",
                "median_latency_ms": f"{latency:.1f}",
                "frames_received": camera.received if camera else 0,
                "frames_processed": self._processed,
                "frames_dropped": self._slot.dropped,
                "frames_bad": camera.bad if camera else 0,
                "last_error": self._last_error,
            })

    def close(self) -> None:
        """Stop the worker and free the model (called by main on the way out)."""
        self.stop_work()
        self.free_model()


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run_nodes([RewardNode]))


if __name__ == "__main__":
    main()

"""rclpy glue shared by every node: parameter declaration from params.py, QoS, diagnostics, main().

This is the only place besides the *_node.py files that imports rclpy; the spatial core never does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy import executors as rclpy_executors
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from spatialvlm_ros.params import ParamSet

# Camera streams: best-effort so both reliable and best-effort publishers match, depth 1 because
# only the newest frame is ever used (older ones are dropped and counted, never queued).
CAMERA_QOS = QoSProfile(
    depth=1,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
    history=qos_profile_sensor_data.history,
)


def matching_qos(publishers: list[Any], depth: int) -> tuple[QoSProfile, bool, bool]:
    """Subscription QoS matching the publishers (rosbag2's rule): reliable when all of them are, and
    transient-local when all of them are that too; best-effort (which matches every publisher) otherwise.

    ``publishers`` are rclpy TopicEndpointInfo (``node.get_publishers_info_by_topic``).
    Returns (profile, reliable, transient_local).
    """
    reliable = bool(publishers) and all(
        p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
    transient = reliable and all(
        p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers
    )
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )
    return profile, reliable, transient


class NodeParams:
    """Declares a ParamSet on a node, validates every change, and keeps the current values.

    ``on_change`` sees the merged new values before they take effect and may refuse them by
    returning a reason. Reading ``values`` from any thread is safe: the dict is replaced, not
    mutated.
    """

    def __init__(
        self,
        node: Node,
        param_set: ParamSet,
        on_change: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self._param_set = param_set
        self._on_change = on_change
        for spec in param_set.specs:
            descriptor = ParameterDescriptor(
                description=f"{spec.description}" + (f" [{spec.unit}]" if spec.unit else ""),
                read_only=spec.read_only,
                additional_constraints=spec.range_text().replace("\\|", "|"),
            )
            if spec.type_name == "double" and spec.min_value is not None and spec.max_value is not None:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(spec.min_value),
                                       to_value=float(spec.max_value), step=0.0)
                ]
            if spec.type_name == "int" and spec.min_value is not None and spec.max_value is not None:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=0)
                ]
            try:
                node.declare_parameter(spec.name, spec.default, descriptor)
            except (ParameterException, InvalidParameterTypeException) as exc:
                # e.g. a value outside the declared range given with -p or in a params file
                raise ValueError(f"parameter {spec.name}: {exc}") from exc
        values = {s.name: node.get_parameter(s.name).value for s in param_set.specs}
        # Integers given for double parameters (a YAML "1") arrive as ints: normalise.
        values = {n: (float(v) if param_set[n].type_name == "double" and isinstance(v, int) else v)
                  for n, v in values.items()}
        errors = param_set.validate(values)
        if errors:
            raise ValueError("invalid parameters: " + "; ".join(errors))
        self.values: dict[str, Any] = values
        node.add_on_set_parameters_callback(self._on_set)

    def _on_set(self, params: list) -> SetParametersResult:
        new = dict(self.values)
        for p in params:
            if p.name not in new:
                continue  # not ours (e.g. use_sim_time)
            new[p.name] = p.value
        errors = self._param_set.validate({p.name: new[p.name] for p in params if p.name in new})
        if not errors and self._on_change is not None:
            reason = self._on_change(new)
            if reason:
                errors = [reason]
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        self.values = new
        return SetParametersResult(successful=True)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class ThrottledLog:
    """At most one log line per ``period_s`` per key, with how many were suppressed."""

    def __init__(self, logger: Any, period_s: float = 5.0) -> None:
        self._logger = logger
        self._period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self._period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            suppressed = self._suppressed.pop(key, 0)
            self._last[key] = now
        extra = f" ({suppressed} similar suppressed)" if suppressed else ""
        self._logger.warning(text + extra)


def publish_diagnostics(node: Node, publisher: Any, feature: str, ok: bool, message: str,
                        hardware_id: str, values: dict[str, Any]) -> None:
    """One DiagnosticStatus named '<node>: <feature>' on /diagnostics (OK or WARN), values as text."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
        name=f"{node.get_fully_qualified_name()}: {feature}",
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value="" if v is None else str(v)) for k, v in values.items()],
    )
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(msg)


def to_json(payload: dict[str, Any]) -> str:
    """JSON for std_msgs/String outputs: NaN is never emitted (unknown numbers are null)."""
    return json.dumps(payload, allow_nan=False, separators=(", ", ": "))


class MultiThreadedExecutor(rclpy_executors.MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor without its busy loop.

    rclpy (7.1 here) yields a callback that its thread pool has not started yet again on the next
    wait, and submits it again: the spinning thread loops without blocking and keeps the GIL from the
    pool thread that would run the callback. Measured on 2 cores (bench/executor_latency.py), a burst
    of 12 request/answer pairs in one process took a median of 0.7 to 2.8 s (worst 9.2 s) over runs,
    against 1.4 ms single-threaded and 3.5 ms with this executor. This executor submits each callback once and, while the pool has not started it,
    sleeps 0.1 ms instead of spinning. Everything else is rclpy's.
    """

    _GIL_YIELD_S = 1e-4

    def known_layout(self) -> bool:
        """Whether rclpy's executor has the private members this loop relies on (its future list and
        thread pool). Otherwise (another rclpy: Humble's, or a future one; rclpy is not pinned) rclpy's
        own loop runs, busy loop included; tests run both paths."""
        return isinstance(getattr(self, "_futures", None), list) and hasattr(getattr(self, "_executor", None), "submit")

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        if not self.known_layout():
            return super()._spin_once_impl(timeout_sec, wait_condition)
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, rclpy_executors.ShutdownException,
                rclpy_executors.TimeoutException, rclpy_executors.ConditionReachedException):
            return
        if handler in self._futures:  # submitted already, not started yet: let the pool run it
            time.sleep(self._GIL_YIELD_S)
        else:
            self._executor.submit(handler)
            self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exceptions, as rclpy does


class ShutdownSignals:
    """SIGINT/SIGTERM for run_nodes: the first asks for an orderly stop, a second one forces exit.

    rclpy's own handlers shut the context down at once, under the nodes' feet: a worker thread in
    the middle of a model call then publishes into a dead context (``RCLError: publisher's context is
    invalid``) and the model can be freed while it runs. Here the signal only sets ``requested``;
    run_nodes then stops the nodes' workers, closes the nodes (which free their models last) and
    only then shuts rclpy down. A second signal while that waits (a long model call) exits at once
    with 128 + the signal number.
    """

    FORCED_EXIT_CODE = 128

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        import os
        import signal

        name = signal.Signals(signum).name
        if self.requested.is_set():
            os.write(2, f"[spatialvlm_ros] second {name}: exiting now, without waiting for the "
                        "model call in progress\n".encode())
            os._exit(self.FORCED_EXIT_CODE + signum)
        self.signal_name = name
        self.requested.set()


# How often the main thread looks up from spinning for a stop request: the bound on how long a
# SIGINT waits before shutdown starts.
SHUTDOWN_POLL_S = 0.02


def spin_once_through_callback_errors(executor: Any, logger: Any, timeout_sec: float) -> None:
    """``executor.spin_once()``, going on after a callback raises (logged with its traceback).

    rclpy re-raises a callback's exception out of spin_once(), which would end the process; one is known
    to come from rclpy itself: its lifecycle change_state service raises on a transition the current
    state does not have (`ros2 lifecycle set` of a managed node to activate while unconfigured). A node
    on a robot should refuse that request, not die of it.
    """
    import traceback

    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except (KeyboardInterrupt, ExternalShutdownException):
        raise
    except Exception as exc:  # noqa: BLE001 - logged; the node keeps serving
        if not rclpy.ok():
            return  # the context went down meanwhile: the caller's loop ends
        text = f"a callback raised {type(exc).__name__}: {exc}; the node goes on\n{traceback.format_exc()}"
        if logger is not None:
            logger.error(text)
        else:
            print(text, flush=True)


def run_nodes(factories: list[Callable[[], Node]], num_threads: int = 4) -> int:
    """init -> spin -> clean up; returns the process exit code (2: start-up failed).

    ``num_threads`` > 1 spins a MultiThreadedExecutor (services answer while other callbacks run);
    1 a SingleThreadedExecutor, for nodes whose callbacks are all quick (the recorder: rclpy's
    multi-threaded executor costs it about four times the CPU for the same messages).
    Each node may define ``close()``; it is called on the way out whatever ended the spin
    (Ctrl-C, SIGTERM, an exception), while the ROS context is still up, so a worker can finish
    its frame, models are freed after their workers stopped, and open files are finished.
    """
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    signals = ShutdownSignals()
    signals.install()
    nodes: list[Node] = []
    code = 0
    executor: Any = None
    try:
        for factory in factories:
            if signals.requested.is_set():
                break
            nodes.append(factory())
        executor = MultiThreadedExecutor(num_threads=num_threads) if num_threads > 1 \
            else SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        logger = nodes[0].get_logger() if nodes else None
        while not signals.requested.is_set() and rclpy.ok():
            spin_once_through_callback_errors(executor, logger, SHUTDOWN_POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        # One line, on stdout: a launch file shows it as the node's output. (It used to go through
        # Python logging too, which printed it a second time on stderr.)
        print(f"[spatialvlm_ros] start-up failed: {exc}", flush=True)
        code = 2
    finally:
        if signals.requested.is_set() and nodes:
            _log_quietly(nodes[0], f"{signals.signal_name}: shutting down (again to force exit)")
        # Nothing is dispatched any more; close() stops each worker and answers what waits (which
        # releases service callbacks still running in the pool), then the executor is let go.
        for node in reversed(nodes):
            close = getattr(node, "close", None)
            if close is not None:
                close()
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        for node in reversed(nodes):
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        signals.restore()
    if signals.requested.is_set():
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process once everything is closed, without the interpreter's teardown.

    After the nodes were closed (files finalized, models freed) and rclpy shut down, tearing down
    torch's and the DDS libraries' globals took seconds more (bench/service_latency.py prints
    SIGINT-to-exit), and a launch file escalates to SIGTERM and SIGKILL after a few seconds.
    Nothing is left for it to do but flush the logs.
    """
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not change the exit code
            pass
    os._exit(code)


def _log_quietly(node: Node, text: str) -> None:
    try:
        node.get_logger().info(text)
    except Exception:  # noqa: BLE001 - logging must not stand in the way of shutting down
        pass


class ModelPhases:
    """The model half of a model node's phases, shared by reward_node and affordance_node: ``load_model``
    and ``free_model``; each node adds ``start_work`` and ``stop_work``. A plain node runs them at start
    and on the way out; managed.py drives them from lifecycle transitions (``managed`` True).

    The node sets ``params`` (NodeParams) and ``_injected`` (estimators handed in by tests, or None).
    """

    managed = False
    estimator: Any = None
    cross_estimator: Any = None
    params: NodeParams
    _injected: tuple[Any, Any] = (None, None)

    def load_model(self) -> None:
        """Load the estimator and, with cross_check, the other backend's; a StartupError says why not."""
        self.estimator, self.cross_estimator = load_estimators(
            self.get_name(), self.params.values, *self._injected)  # type: ignore[attr-defined]

    def free_model(self) -> None:
        for estimator in (self.estimator, self.cross_estimator):
            if estimator is not None:
                estimator.close()
        self.estimator = self.cross_estimator = None


def load_estimators(node_name: str, values: dict[str, Any], estimator: Any = None,
                    cross_check_estimator: Any = None) -> tuple[Any, Any]:
    """The node's estimator and, with ``cross_check`` on, the other backend's; loaded through
    shared_estimator so nodes in one process share one model copy. Injected ones (tests) win.

    A model that cannot be loaded is a StartupError that says what to do.
    """
    from spatialvlm_ros.spatial.cross_check import cross_check_config
    from spatialvlm_ros.spatial.estimator import ModelConfig, ModelLoadError, shared_estimator

    try:
        config = ModelConfig.from_params(values)
        if estimator is None or (values.get("cross_check") and cross_check_estimator is None):
            quiet_model_loading()
        if estimator is None:
            estimator = shared_estimator(config)
        if values.get("cross_check") and cross_check_estimator is None:
            cross_check_estimator = shared_estimator(cross_check_config(config))
    except (ModelLoadError, ValueError) as exc:
        raise StartupError(f"{node_name}: {exc}") from exc
    return estimator, (cross_check_estimator if values.get("cross_check") else None)


def estimator_problem(*estimators: Any) -> str | None:
    """Why an estimator cannot answer right now (the remote backend's unreachable server), else None."""
    for estimator in estimators:
        problem = getattr(estimator, "problem", None) if estimator is not None else None
        if problem:
            return f"{getattr(estimator, 'backend', 'estimator')}: {problem}"
    return None


def quiet_model_loading() -> None:
    """No progress bars from transformers while a node loads its model: a bar redraws itself with
    carriage returns, which a launch log or journald keeps as garbage lines."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the geometric or a remote backend may run without transformers
        return
    hf_logging.disable_progress_bar()


class StartupError(RuntimeError):
    """A node cannot start (bad parameters, a model that cannot be loaded); the text says what to do."""

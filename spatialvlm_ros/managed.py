"""Managed (lifecycle) variants of the model nodes, for ``ros2 lifecycle`` and nav2's lifecycle manager.

The same node classes, started unconfigured: configure loads the model (a model that cannot be loaded
fails the transition, the node stays unconfigured and logs why), activate subscribes the camera and
starts the worker, deactivate stops the work but keeps the model in memory, cleanup frees it.
``reward_node_managed`` and ``affordance_node_managed`` are these; the plain executables keep doing all
of it at start-up.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from spatialvlm_ros.node_support import StartupError, run_nodes


def _logged(callback: Callable[[Any, LifecycleState], TransitionCallbackReturn]) -> Callable[..., TransitionCallbackReturn]:
    """rclpy turns an exception in a transition callback into ERROR without a word: say what it was,
    and fail the transition instead (the node stays where it was)."""
    @functools.wraps(callback)
    def wrapper(self: Any, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return callback(self, state)
        except Exception as exc:  # noqa: BLE001 - reported, and the transition fails cleanly
            self.get_logger().error(f"{callback.__name__} failed: {type(exc).__name__}: {exc}\n"
                                    + traceback.format_exc())
            return TransitionCallbackReturn.FAILURE
    return wrapper


class ManagedPhases:
    """Lifecycle callbacks over a model node's phases: load_model, start_work, stop_work, free_model."""

    managed = True
    #: Why the last configure failed (also logged); None after a successful one.
    configure_error: str | None = None
    active = False

    @_logged
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.load_model()
        except StartupError as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed, the node stays unconfigured: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self.get_logger().info(f"configured: model {self.estimator.model_name} loaded")
        return TransitionCallbackReturn.SUCCESS

    @_logged
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.start_work()
        self.active = True
        return super().on_activate(state)

    @_logged
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.get_logger().info("deactivated: no frames taken, the model stays loaded")
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.free_model()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    @_logged
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition raised: leave nothing half-running, and go back to unconfigured.
        self._stop()
        self.free_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        if self.active:
            self.stop_work()
            self.active = False

    def close(self) -> None:
        """Whatever state the node is in, stop and free (main calls it on the way out)."""
        self._stop()
        self.free_model()


def managed(node_class: type) -> type:
    """The lifecycle variant of a model node class (RewardNode, AffordanceNode): one class, not a copy."""
    return type(f"Managed{node_class.__name__}", (ManagedPhases, node_class, LifecycleNode),
                {"__doc__": f"{node_class.__name__} as a managed (lifecycle) node."})


def _main(node_class: type) -> None:
    raise SystemExit(run_nodes([managed(node_class)]))


def reward_main(args: Any = None) -> None:
    from spatialvlm_ros.reward_node import RewardNode

    _main(RewardNode)


def affordance_main(args: Any = None) -> None:
    from spatialvlm_ros.affordance_node import AffordanceNode

    _main(AffordanceNode)

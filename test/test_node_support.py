"""node_support's executor: what every node's main() but the recorder's spins on."""

from __future__ import annotations

import threading
import time

import pytest
from ros_helpers import wait_for
from std_srvs.srv import Trigger


class OtherLayoutExecutor:
    """node_support's executor as it runs on an rclpy whose executor internals are laid out otherwise:
    the layout check fails, so rclpy's own loop runs (counted, to show the fallback was taken)."""

    @staticmethod
    def make(num_threads: int):
        from spatialvlm_ros.node_support import MultiThreadedExecutor

        class Fallback(MultiThreadedExecutor):
            checks = 0

            def known_layout(self) -> bool:
                Fallback.checks += 1
                return False

        return Fallback(num_threads=num_threads)


def test_the_layout_check_recognises_this_rclpy(ros):
    from spatialvlm_ros.node_support import MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=2)
    assert executor.known_layout()  # the fast path is the one the other tests exercise here
    executor.shutdown()


@pytest.mark.parametrize("layout", ["rclpy_as_pinned", "other_rclpy_layout"])
def test_package_executor_runs_each_callback_once_and_concurrently(ros, layout):
    """node_support.MultiThreadedExecutor (every node's main() but the recorder's): a service callback
    that blocks does not stop subscription callbacks, and each message runs its callback exactly once
    (the executor skips rclpy's re-yielded, not yet started callbacks instead of submitting them again).
    The same holds on the fallback to rclpy's own loop, taken when rclpy's internals differ."""
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from spatialvlm_ros.node_support import MultiThreadedExecutor

    node = Node("executor_probe")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    release, blocked = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow_service(_request, response):
        blocked.set()
        response.success = release.wait(20)
        return response

    service_group = MutuallyExclusiveCallbackGroup()
    node.create_service(Trigger, "executor_probe/slow", slow_service, callback_group=service_group)
    node.create_subscription(String, "executor_probe/in", lambda m: seen.append(m.data), qos)
    pub = node.create_publisher(String, "executor_probe/in", qos)
    client = node.create_client(Trigger, "executor_probe/slow")
    if layout == "rclpy_as_pinned":
        executor = MultiThreadedExecutor(num_threads=4)
    else:
        executor = OtherLayoutExecutor.make(num_threads=4)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        wait_for(blocked.is_set, 10, "the service callback to start")
        for i in range(50):
            pub.publish(String(data=str(i)))
        wait_for(lambda: len(seen) >= 50, 10, "every message while the service callback blocks")
        assert not future.done()
        release.set()
        wait_for(future.done, 10, "the service response")
        assert future.result().success
        time.sleep(0.2)  # a duplicated callback would show up as a 51st message
        assert seen == [str(i) for i in range(50)]
        if layout != "rclpy_as_pinned":
            assert type(executor).checks > 0  # rclpy's own loop ran
    finally:
        release.set()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        node.destroy_node()

"""How long rclpy's executors take to deliver a burst of small reliable messages, in one process.

A planner-like node publishes 12 std_msgs/String requests; a responder node answers each from its
subscription callback; the time until the 12th answer arrives is measured for ``--trials`` bursts.
The same nodes are spun by a SingleThreadedExecutor (the baseline), by rclpy's MultiThreadedExecutor
with ``--threads`` threads, and by node_support.MultiThreadedExecutor (the one reward_node and
affordance_node's main() use, multi-threaded so that check_gap can wait for the model without
blocking the executor). Prints the median and worst burst latency of each and the ratio against the
baseline.

    .venv/bin/python bench/executor_latency.py --trials 20
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from importlib.metadata import version

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from spatialvlm_ros.node_support import MultiThreadedExecutor as PackageExecutor


def measure(make_executor, trials: int, burst: int) -> list[float]:
    context = rclpy.Context()
    rclpy.init(context=context)
    planner, responder = Node("bench_planner", context=context), Node("bench_responder", context=context)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    answers_pub = responder.create_publisher(String, "bench/answer", qos)
    responder.create_subscription(String, "bench/query", answers_pub.publish, qos)
    arrived: list[float] = []
    planner.create_subscription(String, "bench/answer", lambda _m: arrived.append(time.monotonic()), qos)
    queries_pub = planner.create_publisher(String, "bench/query", qos)
    executor = make_executor(context)
    executor.add_node(planner)
    executor.add_node(responder)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while (queries_pub.get_subscription_count() == 0 or answers_pub.get_subscription_count() == 0) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        out = []
        for _ in range(trials):
            arrived.clear()
            start = time.monotonic()
            for i in range(burst):
                queries_pub.publish(String(data=str(i)))
            while len(arrived) < burst and time.monotonic() - start < 30:
                time.sleep(0.001)
            out.append((arrived[-1] if len(arrived) == burst else time.monotonic()) - start)
        return out
    finally:
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        planner.destroy_node()
        responder.destroy_node()
        rclpy.shutdown(context=context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--burst", type=int, default=12)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    results = {
        "single-threaded": measure(lambda c: SingleThreadedExecutor(context=c), args.trials, args.burst),
        f"rclpy multi-threaded ({args.threads})": measure(
            lambda c: MultiThreadedExecutor(num_threads=args.threads, context=c), args.trials, args.burst),
        f"package multi-threaded ({args.threads})": measure(
            lambda c: PackageExecutor(num_threads=args.threads, context=c), args.trials, args.burst),
    }
    base = statistics.median(results["single-threaded"])
    print(f"{args.trials} bursts of {args.burst} request/answer pairs in one process (ros-jazzy-rclpy {version('ros-jazzy-rclpy')})")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:<30} median {med * 1000:8.1f} ms  worst {max(values) * 1000:8.1f} ms  "
              f"median / single-threaded {med / base:7.1f}x")


if __name__ == "__main__":
    main()

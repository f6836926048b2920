"""Shared pieces of the service-latency and soak benches: a 30 Hz RGB-D camera process, a trivial rclpy
Trigger server (the baseline), timed service calls, process start/stop as users do it.

    python bench/_harness.py camera --rate 30          # publishes until SIGINT, then prints counts (JSON)
    python bench/_harness.py trivial                   # a Trigger server at /bench_trivial/trigger
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


def describe_ms(values: list[float]) -> str:
    if not values:
        return "no answers"
    return (f"n={len(values):4d}  p50 {percentile(values, 50):7.1f}  p90 {percentile(values, 90):7.1f}  "
            f"p99 {percentile(values, 99):7.1f}  max {max(values):7.1f} ms  "
            f"over 100 ms: {sum(v > 100 for v in values)}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def ros_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env or ros_env())


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB (from /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Caller:
    """Timed service calls from one small node spinning in its own thread."""

    def __init__(self, name: str = "bench_caller") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.clients: dict[str, Any] = {}

    def client(self, srv_type: Any, name: str) -> Any:
        if name not in self.clients:
            self.clients[name] = self.node.create_client(srv_type, name)
        return self.clients[name]

    def wait_ready(self, srv_type: Any, name: str, timeout: float = 300.0) -> None:
        if not self.client(srv_type, name).wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {name} not available after {timeout} s")

    def call_ms(self, srv_type: Any, name: str, request: Any, timeout: float = 60.0) -> tuple[float | None, Any]:
        """(latency in ms until the response arrived, the response) or (None, None) on timeout."""
        done = threading.Event()
        finished: list[float] = []
        started = time.monotonic()
        future = self.client(srv_type, name).call_async(request)
        future.add_done_callback(lambda _f: (finished.append(time.monotonic()), done.set()))
        if not done.wait(timeout):
            return None, None
        return (finished[0] - started) * 1e3, future.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown()


def summarize(samples: dict[str, list[float]]) -> None:
    width = max(len(k) for k in samples)
    for name, values in samples.items():
        print(f"  {name:<{width}}  {describe_ms(values)}", flush=True)


# ---------------------------------------------------------------------------------------------
# Roles run as their own processes


def run_camera(rate_hz: float) -> int:
    """The demo scene's 640x480 rgb8 + 16UC1 depth + camera_info, reliable, at rate_hz, until SIGINT;
    prints counts. Frames are rendered once and replayed with fresh stamps (a camera costs no render)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    rclpy.init()
    node = rclpy.create_node("bench_camera")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {n: node.create_publisher(t, n, qos) for n, t in
            (("image", Image), ("depth", Image), ("camera_info", CameraInfo))}
    scene = ApproachScene(frames=8)
    frames = []
    for i in range(8):
        f = scene.render(i)
        frames.append((Image(**rgb_to_image_fields(f.rgb, "rgb8")), Image(**metres_to_depth_fields(f.depth_m, "16UC1"))))
    k = scene.intrinsics
    info = CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=scene.camera.k_matrix(), p=scene.camera.p_matrix())
    stop_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    sent = 0
    late = 0
    period = 1.0 / rate_hz
    next_t = time.monotonic()
    print("CAMERA READY", flush=True)
    while not stop_event.is_set():
        image, depth = frames[sent % len(frames)]
        stamp = node.get_clock().now().to_msg()
        for msg in (image, depth, info):
            msg.header.stamp = stamp
            msg.header.frame_id = f"bench_camera_optical#{sent}"  # numbered: the soak counts what is missing
        pubs["image"].publish(image)
        pubs["depth"].publish(depth)
        pubs["camera_info"].publish(info)
        sent += 1
        next_t += period
        wait = next_t - time.monotonic()
        if wait > 0:
            stop_event.wait(wait)
        else:
            late += 1
    print(json.dumps({"frames_sent": sent, "frames_late": late}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_trivial() -> int:
    """A Trigger server that answers at once: what the machine's load alone costs a service call."""
    import rclpy
    from std_srvs.srv import Trigger

    rclpy.init()
    node = rclpy.create_node("bench_trivial")

    def answer(_req: Any, resp: Any) -> Any:
        resp.success = True
        return resp

    node.create_service(Trigger, "~/trigger", answer)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):  # noqa: BLE001 - shut down by signal
        pass
    rclpy.try_shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    cam = sub.add_parser("camera")
    cam.add_argument("--rate", type=float, default=30.0)
    sub.add_parser("trivial")
    args = parser.parse_args()
    if args.role == "camera":
        return run_camera(args.rate)
    return run_trivial()


if __name__ == "__main__":
    sys.exit(main())


#!/usr/bin/env python3
"""Reward pipeline bench: the bare estimator vs the running reward node, over real ROS topics.

    .venv/bin/python bench/reward_pipeline.py [--frames 60] [--model PATH_OR_ID] [--camera-hz 30]

Feeds N synthetic 640x480 rgb8 frames (ApproachScene) through

  (a)  the bare estimator: ``estimate()`` on one Frame per call, the node's own question and model settings;
  (b)  ``reward_node`` started as its own process (``.venv/bin/reward_node``), over ``image`` -> ``reward_info``:
       (b1) paced: publish a frame, wait for the ``reward_info`` with its stamp, repeat -> frames/s and latency;
            (b1)/(a) per-frame time is the node's overhead;
       (b2) a camera faster than the model (``--camera-hz``): frames published / answered / dropped, and the
            age of the frame each answer refers to (receive time - source stamp), which must stay bounded.

Without ``--model`` the shipped tiny spatial model (``builtin:tiny-spatial``, trained on these synthetic scenes)
answers, asked about the scene's target (``target_object`` = the orange cylinder); its timings are those of a
~2.4M-parameter model, so the figures measure the pipeline around the model. The bench runs in its own ROS_DOMAIN_ID with a temporary
ROS_LOG_DIR and the package's Fast DDS profile (config/fastdds_shm.xml), which the node process inherits.
Exit status: 0 when every stage answered and the (b2) age stayed bounded, 1 otherwise, 2 on a set-up error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_shm.xml"
WIDTH, HEIGHT = 640, 480
NODE_STATUS_NAME = "spatialvlm_reward"


class BenchError(RuntimeError):
    """The bench cannot go on (node died, no answers); the text says why."""


# ---------------------------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def med(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def _pdeathsig_preexec():
    """A preexec_fn that makes the kernel SIGTERM the node if the bench itself dies (Linux only)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def start_node(model: str, log_path: Path, extra_params: list[str]) -> subprocess.Popen:
    exe = Path(sys.prefix) / "bin" / "reward_node"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "spatialvlm_ros.reward_node"]
    cmd += ["--ros-args", "-p", f"model.name_or_path:={model}"]
    for param in extra_params:
        cmd += ["-p", param]
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ.copy(), preexec_fn=_pdeathsig_preexec())
    finally:
        log.close()  # the child holds its own descriptor


def stop_node(proc: subprocess.Popen | None) -> int | None:
    """SIGINT (clean shutdown: worker stopped, model freed), then SIGKILL if it does not exit.

    Returns the exit status when the node was still running (None when there was none to stop).
    """
    if proc is None or proc.poll() is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print("reward_node did not exit within 10 s of SIGINT: killed", flush=True)
        proc.kill()
        proc.wait(timeout=10)
    return proc.returncode


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no node log)"
    return "\n".join("    " + line for line in text[-lines:])


# ---------------------------------------------------------------------------------------------- (a)
@dataclass
class BareResult:
    times_ms: list[float]
    wall_s: float
    with_distance: int
    load_s: float


def run_bare(model_config: Any, query: Any, frames_rgb: list[np.ndarray], warmup: int) -> BareResult:
    from spatialvlm_ros.spatial.estimator import Frame, ModelLoadError, build_estimator

    t = time.perf_counter()
    try:
        estimator = build_estimator(model_config)
    except (ModelLoadError, ValueError, OSError) as exc:
        raise BenchError(f"(a) cannot load {model_config.name_or_path!r}: {type(exc).__name__}: {exc}") from exc
    load_s = time.perf_counter() - t
    try:
        for i in range(warmup):
            estimator.estimate([(Frame(rgb=frames_rgb[i % len(frames_rgb)]), query)])
        times, with_distance = [], 0
        start = time.perf_counter()
        for rgb in frames_rgb:
            t = time.perf_counter()
            (estimate,) = estimator.estimate([(Frame(rgb=rgb), query)])
            times.append((time.perf_counter() - t) * 1e3)
            with_distance += estimate.value_m is not None
        wall_s = time.perf_counter() - start
    finally:
        estimator.close()
        del estimator
        gc.collect()
    return BareResult(times, wall_s, with_distance, load_s)


# ---------------------------------------------------------------------------------------------- (b) client
@dataclass
class Diag:
    values: dict[str, str]
    recv_mono: float


@dataclass
class Client:
    """The bench's ROS side: spatialvlm_ros.client.RewardClient (publishes the frames, keeps each frame's
    reward_info by stamp) plus a /diagnostics listener on its node, and a watch on the node process."""

    rc: Any  # RewardClient
    proc: subprocess.Popen
    log_path: Path
    cond: threading.Condition = field(default_factory=threading.Condition)
    answers: dict[int, Any] = field(default_factory=dict)  # source stamp (ns) -> RewardResult
    sent_mono: dict[int, float] = field(default_factory=dict)  # source stamp (ns) -> publish time
    diag: Diag | None = None

    def setup(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.rc.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def close(self) -> None:
        self.rc.close()

    def _on_diag(self, msg: Any) -> None:  # the client's spin thread
        for status in msg.status:
            if NODE_STATUS_NAME in status.name:
                with self.cond:
                    self.diag = Diag({kv.key: kv.value for kv in status.values}, time.monotonic())
                    self.cond.notify_all()

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"reward_node exited with status {self.proc.returncode}; its log:\n"
                             f"{log_tail(self.log_path)}")

    def wait(self, predicate, timeout_s: float) -> bool:
        """Wait for ``predicate()`` (called under the lock); fails fast if the node process died."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not predicate():
                self._alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(min(remaining, 0.2))
        return True

    def publish(self, msg: Any) -> int:
        """Publish ``msg`` with a fresh stamp (unique, increasing); returns the stamp in ns."""
        key = self.rc.publish_image(msg)
        self.sent_mono[key] = time.monotonic()
        return key

    def answer(self, key: int, timeout_s: float) -> Any:
        """The frame's RewardResult (status "timeout" when none came); fails fast if the node died."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.rc.get_reward(key, timeout_s=max(0.0, min(0.2, deadline - time.monotonic())))
            if result.status != "timeout":
                self.answers[key] = result
                return result
            self._alive()
            if time.monotonic() >= deadline:
                return result

    def measured(self, key: int, timeout_s: float) -> bool:
        """True when the model measured this frame (not dropped for a newer one, not lost)."""
        return self.answer(key, timeout_s).status not in ("timeout", "dropped", "refused")

    def matched(self) -> bool:
        return self.rc.wait_for_node(0.0)

    def fresh_diag(self, after_mono: float, processed: int, timeout_s: float = 3.0) -> Diag | None:
        """The first /diagnostics status received after ``after_mono`` that has counted ``processed`` frames."""
        def ok() -> bool:
            return (self.diag is not None and self.diag.recv_mono > after_mono
                    and int(self.diag.values.get("frames_processed", -1)) >= processed)
        self.wait(ok, timeout_s)
        return self.diag


def build_messages(frames_rgb: list[np.ndarray]) -> list[Any]:
    from sensor_msgs.msg import Image

    from spatialvlm_ros.spatial.imaging import rgb_to_image_fields

    msgs = []
    for rgb in frames_rgb:
        msg = Image(**rgb_to_image_fields(rgb, "rgb8"))
        msg.header.frame_id = "bench_camera_optical"
        msgs.append(msg)
    return msgs


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per stage (default 60)")
    parser.add_argument("--model", default=None,
                        help="hub id or local checkpoint directory (default: the shipped tiny spatial "
                             "model, builtin:tiny-spatial)")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera rate in (b2) (default 30)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured frames before (a) and (b1)")
    parser.add_argument("--reliable", action="store_true",
                        help="publish the camera reliable (default best-effort, like most drivers)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="OMP_NUM_THREADS for the bench and the node (default: torch's own choice)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID for the bench and its node (default: 100 + pid %% 100)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra reward_node parameter, also applied to (a) where it is a model.* or "
                             "question parameter (repeatable)")
    parser.add_argument("--startup-timeout", type=float, default=300.0,
                        help="seconds the node may take to load the model and match (default 300)")
    parser.add_argument("--answer-timeout", type=float, default=60.0,
                        help="seconds to wait for one answer in (b1) before counting the frame lost")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (node log)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    if args.camera_hz <= 0:
        parser.error("--camera-hz must be positive")
    return args


def set_environment(args: argparse.Namespace, work: Path, local_model: bool) -> None:
    """Everything the bench and the node process it starts share; set before rclpy is imported."""
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100)
    log_dir = work / "ros_log"
    log_dir.mkdir()
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)  # Fast DDS 3.x reads this name
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Busy-waiting OpenMP workers made per-frame times 5-10x slower and erratic whenever another process
    # wanted a core of this 2-core machine; passive waiting keeps (a) and (b) comparable. Same for both.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.torch_threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    if local_model:
        os.environ["HF_HUB_OFFLINE"] = "1"


def node_values(model: str, extra_params: list[str]) -> dict[str, Any]:
    """The node's parameter values as the bench configures it (defaults + overrides), for (a)."""
    import yaml

    from spatialvlm_ros.params import REWARD_PARAMS

    values = REWARD_PARAMS.defaults()
    values["model.name_or_path"] = model
    for param in extra_params:
        name, sep, raw = param.partition(":=")
        if not sep:
            raise BenchError(f"--param {param!r}: expected NAME:=VALUE")
        value = yaml.safe_load(raw)  # what ROS does with -p values
        if name in values and REWARD_PARAMS[name].type_name == "double" and isinstance(value, int):
            value = float(value)
        values[name] = value if name in values else raw
    return values


@dataclass
class Held:
    """What main() must clean up whatever happens in run()."""

    proc: subprocess.Popen | None = None
    client: Client | None = None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="reward_pipeline_bench_"))
    local_model = args.model is None or Path(args.model).expanduser().exists()
    set_environment(args, work, local_model)
    held = Held()

    def on_sigterm(signum, frame):  # turn SIGTERM into an exception so `finally` stops the node
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run(args, work, local_model, held)
    except BenchError as exc:
        print(f"bench failed: {exc}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        node_rc = stop_node(held.proc)
        if held.client is not None:
            with contextlib.suppress(Exception):
                held.client.close()
        rclpy = sys.modules.get("rclpy")
        if rclpy is not None and rclpy.ok():
            rclpy.shutdown()
        if node_rc not in (None, 0):
            print(f"note: reward_node exited with status {node_rc} after SIGINT", flush=True)
        if args.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, local_model: bool, held: Held) -> int:
    from spatialvlm_ros.spatial.estimator import ModelConfig
    from spatialvlm_ros.spatial.questions import distance_query
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    n, period_s = args.frames, 1.0 / args.camera_hz
    if args.model is None:
        from spatialvlm_ros.models import shipped_model_path

        model = str(shipped_model_path())
        model_label = "shipped tiny spatial model (builtin:tiny-spatial)"
        args.param = [f"target_object:={ApproachScene.target_description}", *args.param]
    else:
        model = str(Path(args.model).expanduser().resolve()) if local_model else args.model
        model_label = model
    values = node_values(model, args.param)
    try:
        model_config = ModelConfig.from_params(values)
        query = distance_query(values["question_template"], values["gripper_description"],
                               values["target_object"])
    except ValueError as exc:
        raise BenchError(str(exc)) from exc

    scene = ApproachScene(WIDTH, HEIGHT, frames=n)
    frames_rgb = [scene.render(i).rgb for i in range(n)]

    # ------------------------------------------------------------------ (a) bare estimator
    bare = run_bare(model_config, query, frames_rgb, args.warmup)

    # ------------------------------------------------------------------ (b) the node as its own process
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    log_path = work / "reward_node.log"
    t_start = time.monotonic()
    held.proc = proc = start_node(model, log_path, args.param)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from spatialvlm_ros.client import RewardClient

    # Like a camera driver: keep-last 5, best-effort unless asked otherwise.
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if args.reliable
                     else ReliabilityPolicy.BEST_EFFORT)
    held.client = client = Client(RewardClient(node_name="reward_pipeline_bench", image_qos=qos,
                                               cache_size=4 * n + 100), proc, log_path)
    client.setup()
    msgs = build_messages(frames_rgb)

    if not client.wait(client.matched, args.startup_timeout):
        raise BenchError(f"reward_node did not match within {args.startup_timeout:.0f} s; its log:\n"
                         f"{log_tail(log_path)}")
    matched_s = time.monotonic() - t_start

    # Delivery check + warm-up: re-send a frame each second until the node answers one, then wait for
    # the answer to the last one sent (the newest frame is never dropped), so (b1) starts with an idle node.
    warm_keys: list[int] = []
    deadline = time.monotonic() + args.answer_timeout
    while True:
        warm_keys.append(client.publish(msgs[0]))
        if client.answer(warm_keys[-1], 1.0).status != "timeout":
            break
        if time.monotonic() > deadline:
            raise BenchError(f"no reward_info for {len(warm_keys)} frames in {args.answer_timeout:.0f} s; "
                             f"node log:\n{log_tail(log_path)}")
    first_answer_s = time.monotonic() - t_start
    for i in range(args.warmup - 1):
        client.answer(client.publish(msgs[i % n]), args.answer_timeout)

    # ------------------------------------------------------------------ (b1) paced
    b1_keys, b1_lost = [], 0
    start = time.monotonic()
    for msg in msgs:
        key = client.publish(msg)
        if client.measured(key, args.answer_timeout):
            b1_keys.append(key)
        else:
            b1_lost += 1
    b1_wall = time.monotonic() - start
    b1 = [client.answers[k] for k in b1_keys]
    b1_rtt = [(a.received_monotonic_s - client.sent_mono[k]) * 1e3 for k, a in zip(b1_keys, b1, strict=True)]
    b1_node = [float(a.info["latency_ms"]) for a in b1]
    b1_transport = [r - m for r, m in zip(b1_rtt, b1_node, strict=True)]
    dropped_before = max(int(a.info["frames_dropped"]) for a in client.answers.values())
    processed_before = sum(a.status not in ("dropped", "refused") for a in client.answers.values())
    diag_before = client.fresh_diag(time.monotonic(), processed_before)

    # ------------------------------------------------------------------ (b2) camera faster than the model
    b2_sent: list[int] = []
    start = time.monotonic()
    next_t = start
    for msg in msgs:
        now = time.monotonic()
        if next_t > now:
            time.sleep(next_t - now)
        elif now - next_t > period_s:
            next_t = now  # fell behind by more than a period: do not burst to catch up
        b2_sent.append(client.publish(msg))
        next_t += period_s
    publish_s = time.monotonic() - start
    b2_rate = (n - 1) / (client.sent_mono[b2_sent[-1]] - client.sent_mono[b2_sent[0]])
    # Every frame that reached the node is answered (measured or dropped), in order: wait for the newest;
    # if it was lost on the way, for the others, briefly.
    quiet_s = max(3.0, 5 * pct(b1_rtt, 95) / 1e3)
    client.answer(b2_sent[-1], quiet_s + args.answer_timeout)
    for key in b2_sent:
        client.answer(key, 0.2)
    b2_keys = [k for k in b2_sent if k in client.answers and client.answers[k].status not in ("dropped", "refused")]
    b2 = [client.answers[k] for k in b2_keys]
    b2_dropped_answers = sum(1 for k in b2_sent if k in client.answers and client.answers[k].status == "dropped")
    b2_end = max((a.received_monotonic_s for a in b2), default=time.monotonic())
    b2_ages = [(a.received_ros_ns - k) / 1e6 for k, a in zip(b2_keys, b2, strict=True)]
    b2_node = [float(a.info["latency_ms"]) for a in b2]
    b2_dropped_node = (max(int(a.info["frames_dropped"]) for a in b2) - dropped_before) if b2 else None
    diag_after = client.fresh_diag(b2_end, processed_before + len(b2))
    if b2_dropped_node is not None and b2_dropped_node != b2_dropped_answers:
        print(f"note: frames_dropped grew by {b2_dropped_node} but {b2_dropped_answers} frames were answered "
              "as dropped", flush=True)
    received_b2 = None
    if diag_before is not None and diag_after is not None:
        received_b2 = int(diag_after.values["frames_received"]) - int(diag_before.values["frames_received"])

    # ------------------------------------------------------------------ figures
    import torch

    a_per = bare.wall_s / n * 1e3
    b1_per = b1_wall / max(len(b1), 1) * 1e3
    bound_ms = pct(b1_rtt, 95) + period_s * 1e3
    tolerance = 1.5
    bounded = bool(b2_ages) and max(b2_ages) <= tolerance * bound_ms
    fifo_s = max(0.0, (n * med(b1_rtt) / 1e3) - (n - 1) * period_s)

    print()
    print(f"reward pipeline bench: {n} frames {WIDTH}x{HEIGHT} rgb8 (ApproachScene), "
          f"question {query.text!r}")
    print(f"model {model_label}; torch {torch.__version__} {('cuda' if torch.cuda.is_available() else 'cpu')}"
          f" ({torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})"
          f", {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, "
          f"profile {PROFILE.relative_to(ROOT)}; camera QoS {'reliable' if args.reliable else 'best-effort'}")
    print(f"model load (a) {bare.load_s:.2f} s; node process start -> matched {matched_s:.1f} s, "
          f"-> first answer {first_answer_s:.1f} s")
    print()
    header = f"{'stage':<44}{'answered':>9}{'frames/s':>9}{'ms/frame':>9}{'median':>8}{'p95':>8}{'max':>8}"
    print(header)
    print("-" * len(header))

    def row(label, answered, fps, per, vals):
        print(f"{label:<44}{answered:>9}{fmt(fps, 2):>9}{fmt(per):>9}{fmt(med(vals)):>8}"
              f"{fmt(pct(vals, 95)):>8}{fmt(max(vals) if vals else None):>8}")

    row("(a)  bare estimate(), 1 frame/call", f"{n}/{n}", n / bare.wall_s, a_per, bare.times_ms)
    row("(b1) node paced: send -> reward_info", f"{len(b1)}/{n}", len(b1) / b1_wall, b1_per, b1_rtt)
    row("     node's own latency_ms", "", None, None, b1_node)
    row("     send->reward_info minus latency_ms", "", None, None, b1_transport)
    row(f"(b2) camera {args.camera_hz:g} Hz: age (recv - stamp)", f"{len(b2)}/{n}",
        len(b2) / max(b2_end - start, 1e-9), None, b2_ages)
    row("     node's own latency_ms", "", None, None, b2_node)
    print("-" * len(header))
    print(f"overhead (b1)/(a): per-frame time {b1_per / a_per:.2f}x, median latency "
          f"{med(b1_rtt) / med(bare.times_ms):.2f}x, p95 {pct(b1_rtt, 95) / pct(bare.times_ms, 95):.2f}x")
    lost = "-" if received_b2 is None else str(n - received_b2)
    print(f"(b2) published {n} in {publish_s:.2f} s ({b2_rate:.1f} Hz); answered {len(b2)}; dropped "
          f"{n - len(b2)} by count = {b2_dropped_node if b2_dropped_node is not None else '-'} replaced in the "
          f"node's slot (reward_info frames_dropped) + {lost} never delivered "
          f"(node frames_received +{received_b2 if received_b2 is not None else '-'})")
    print(f"(b2) answer age max {fmt(max(b2_ages) if b2_ages else None)} ms vs bound {tolerance:g} x "
          f"((b1) p95 {fmt(pct(b1_rtt, 95))} ms + 1 frame period {period_s * 1e3:.1f} ms) = "
          f"{tolerance * bound_ms:.1f} ms -> {'BOUNDED' if bounded else 'NOT BOUNDED'} "
          f"(a FIFO of every frame would end ~{fifo_s:.1f} s behind)")
    with_distance_b = sum(a.info["distance_m"] is not None for a in b1 + b2)
    print(f"answers carrying a distance: (a) {bare.with_distance}/{n}, (b) {with_distance_b}/{len(b1) + len(b2)}"
          + ("  (shipped tiny spatial model)" if args.model is None else ""))
    if b1_lost:
        print(f"note: (b1) {b1_lost} frames unanswered within {args.answer_timeout:g} s")

    figures = {
        "frames": n, "model": model, "camera_hz": args.camera_hz, "reliable_camera": args.reliable,
        "a": {"fps": n / bare.wall_s, "ms_per_frame": a_per, "median_ms": med(bare.times_ms),
              "p95_ms": pct(bare.times_ms, 95), "max_ms": max(bare.times_ms)},
        "b1": {"answered": len(b1), "fps": len(b1) / b1_wall, "ms_per_frame": b1_per,
               "median_ms": med(b1_rtt), "p95_ms": pct(b1_rtt, 95),
               "node_latency_median_ms": med(b1_node), "node_latency_p95_ms": pct(b1_node, 95),
               "transport_median_ms": med(b1_transport)},
        "overhead_per_frame_ratio": b1_per / a_per,
        "overhead_median_ratio": med(b1_rtt) / med(bare.times_ms),
        "b2": {"published": n, "publish_hz": b2_rate, "answered": len(b2), "dropped_by_count": n - len(b2),
               "dropped_in_node": b2_dropped_node, "node_received": received_b2,
               "age_median_ms": med(b2_ages), "age_p95_ms": pct(b2_ages, 95),
               "age_max_ms": max(b2_ages) if b2_ages else None, "age_bound_ms": tolerance * bound_ms,
               "bounded": bounded},
        "node_matched_s": matched_s,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if bounded and len(b1) == n else 1


if __name__ == "__main__":
    sys.exit(main())

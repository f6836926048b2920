"""Service, parameter and shutdown latency of the model nodes while the model works flat out on the CPU.

Processes, as users run them: a 30 Hz 640x480 RGB-D camera (bench/_harness.py camera), `spatialvlm_node`
(reward_node + affordance_node around one copy of the shipped model, builtin:tiny-spatial), a trivial
rclpy Trigger server (the baseline: what the machine's load alone costs a call), and this process, which
calls, round-robin every --interval s: the trivial server, `reset`, a parameter set on the reward node
(reward.scale, through its set_parameters service) and `check_gap` (which itself waits for a model call
on the newest frame). At the end the node gets SIGINT and the time until it has exited is printed.

Each variant restarts the nodes:
  before   OpenMP's own default wait policy, one torch thread per core (the nodes until now)
  active   OMP_WAIT_POLICY=ACTIVE exported (threads spin forever), one torch thread per core
  after    the nodes' defaults: idle OpenMP threads sleep, one torch thread per core
  1thread  the defaults with model.cpu_threads=1 (a core left to the node's own threads)
  nice10   the defaults with worker_nice=10 (the model thread yields the CPU to the node's other threads)

    .venv/bin/python bench/service_latency.py                    # 60 calls per service per variant
    .venv/bin/python bench/service_latency.py --calls 20 --variants after
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BIN, ROOT, Caller, load_average, ros_env, start, stop, summarize  # noqa: E402

VARIANTS = {
    "before": ({"OMP_WAIT_POLICY": ""}, {}),
    "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, {}),
    "after": ({}, {}),
    "1thread": ({}, {"model.cpu_threads": "1"}),
    "nice10": ({}, {"worker_nice": "10"}),
}


def run_variant(name: str, calls: int, interval_s: float, rate: float, logs: Path) -> dict[str, list[float]]:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    env_extra, params = VARIANTS[name]
    env = ros_env(**env_extra)
    if env_extra.get("OMP_WAIT_POLICY") == "":
        env.pop("OMP_WAIT_POLICY", None)
        env["OMP_WAIT_POLICY"] = ""  # set, so the node leaves it alone; empty, so OpenMP uses its default
    node_params = {"model.name_or_path": "builtin:tiny-spatial", "model.max_new_tokens": "16",
                   "target_object": "the orange cylinder", "gap.object_a": "the orange cylinder",
                   "gap.object_b": "the blue cylinder", **params}
    args = [str(BIN / "spatialvlm_node"), "--ros-args"]
    for key, value in node_params.items():
        args += ["-p", f"{key}:={value}"]
    trivial = start([sys.executable, str(ROOT / "bench" / "_harness.py"), "trivial"], env, logs / f"{name}_trivial.log")
    node = start(args, env, logs / f"{name}_node.log")
    camera = start([sys.executable, str(ROOT / "bench" / "_harness.py"), "camera", "--rate", str(rate)], env,
                   logs / f"{name}_camera.log")
    caller = Caller(f"bench_caller_{name}")
    rewards: list[float] = []
    caller.node.create_subscription(String, "reward_info", lambda _m: rewards.append(time.monotonic()), 100)
    samples: dict[str, list[float]] = {"trivial Trigger (baseline)": [], "reset": [],
                                       "set_parameters reward.scale": [], "check_gap (includes a model call)": []}
    shutdown_ms = None
    try:
        for srv, srv_name in ((Trigger, "/bench_trivial/trigger"), (Trigger, "/reset"), (Trigger, "/check_gap"),
                              (SetParameters, "/spatialvlm_reward/set_parameters")):
            caller.wait_ready(srv, srv_name)
        deadline = time.monotonic() + 120
        while len(rewards) < 20 and time.monotonic() < deadline:  # the model is at work on the stream
            time.sleep(0.1)
        rewards.clear()
        measured_from = time.monotonic()
        for i in range(calls):
            for label, srv, srv_name, request in (
                ("trivial Trigger (baseline)", Trigger, "/bench_trivial/trigger", Trigger.Request()),
                ("reset", Trigger, "/reset", Trigger.Request()),
                ("set_parameters reward.scale", SetParameters, "/spatialvlm_reward/set_parameters",
                 SetParameters.Request(parameters=[Parameter(name="reward.scale", value=ParameterValue(
                     type=ParameterType.PARAMETER_DOUBLE, double_value=1.0 + (i % 2) * 0.5))])),
                ("check_gap (includes a model call)", Trigger, "/check_gap", Trigger.Request()),
            ):
                ms, _resp = caller.call_ms(srv, srv_name, request)
                if ms is not None:
                    samples[label].append(ms)
                time.sleep(interval_s / 4)
        reward_rate = len(rewards) / (time.monotonic() - measured_from)
        started, sent_wall = time.monotonic(), time.time()
        stop(node, timeout=60)
        shutdown_ms = (time.monotonic() - started) * 1e3
        answered_ms = _logged_after(logs / f"{name}_node.log", "shutting down", sent_wall)
    finally:
        for proc in (camera, node, trivial):
            stop(proc)
        caller.close()
    print(f"\n[{name}] env {env_extra or '(none)'} params {params or '(defaults)'}; {load_average()}; "
          f"reward_info {reward_rate:.1f}/s while measured (camera {rate:g} Hz)", flush=True)
    summarize(samples)
    print(f"  SIGINT: shutdown began after {answered_ms:.0f} ms (its log line), process exited after "
          f"{shutdown_ms:.0f} ms with code {node.returncode} (the frame in progress is finished first)",
          flush=True)
    return samples


def _logged_after(log: Path, words: str, since_wall_s: float) -> float:
    """ms from ``since_wall_s`` to the ROS log line containing ``words`` ([INFO] [sec.nsec] ...)."""
    for line in log.read_text(errors="replace").splitlines():
        if words in line and line.startswith("[") and "] [" in line:
            stamp = float(line.split("] [", 1)[1].split("]", 1)[0])
            return (stamp - since_wall_s) * 1e3
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60, help="calls per service per variant")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds of calls")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--variants", default="before,after,1thread", help=f"comma-separated: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="service_latency_"))
    print(f"service latency under load; start: {load_average()}; logs in {logs}", flush=True)
    results = {}
    for name in args.variants.split(","):
        results[name] = run_variant(name.strip(), args.calls, args.interval, args.rate, logs)
    print(f"\nend: {load_average()}")
    from _harness import percentile

    print("p99 ratio against the trivial server in the same variant:")
    for name, samples in results.items():
        base = percentile(samples["trivial Trigger (baseline)"], 99)
        ratios = ", ".join(f"{k} {percentile(v, 99) / base:.1f}x" for k, v in samples.items()
                           if v and not k.startswith("trivial") and base > 0)
        print(f"  {name}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

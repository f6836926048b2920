"""Soak: reward_node + recorder_node for minutes under a 30 Hz RGB-D camera with the shipped model.

Processes, as users run them: the camera (bench/_harness.py camera: 640x480 rgb8 + 16UC1 depth +
camera_info, reliable), `reward_node` (builtin:tiny-spatial on the CPU, flat out), `recorder_node`
recording image, depth, camera_info, reward and reward_info for the whole run, and this process, which
calls `reset` every --call-period s and samples both nodes' resident memory every --sample-period s.

Printed: RSS of each node over time and its slope (least squares over the run after the first fifth,
MB per 10 min); messages lost (the camera numbers its frames: numbers missing from the recorded bag,
plus what the recorder reports as dropped); the reward rate; reset latency per minute
(p50 / p99 / max) beside the run's trivial-server baseline.

    .venv/bin/python bench/soak.py                   # 10 minutes
    .venv/bin/python bench/soak.py --minutes 2       # a shorter run (say so when quoting it)

Raw 640x480 RGB-D at 30 Hz is 46 MB/s (27 GB in 10 minutes): the recorder compresses chunks with
--compression (lz4 by default; the demo scene's flat colours compress well, a real camera far less), the
episode is deleted after it has been counted unless --keep, and the disk's free space is printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    BIN,
    ROOT,
    Caller,
    describe_ms,
    load_average,
    ros_env,
    rss_mb,
    start,
    stop,
)


def slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) after the first fifth of the run, in MB per 10 minutes."""
    if len(samples) < 4:
        return float("nan")
    t0 = samples[0][0]
    tail = [(t - t0, v) for t, v in samples if t - t0 >= (samples[-1][0] - t0) / 5]
    if len(tail) < 3:
        return float("nan")
    xs, ys = zip(*tail, strict=True)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return (sum((x - mx) * (y - my) for x, y in tail) / den) * 600 if den else float("nan")


def missing_frames(episode: Path) -> dict[str, tuple[int, int]]:
    """Per camera topic: (messages in the bag, numbers missing between the first and the last).

    The bench camera numbers its frames in header.frame_id ("...#N"), so a gap is a lost message, not
    camera jitter.
    """
    from rosbags.highlevel import AnyReader

    seqs: dict[str, set[int]] = {}
    with AnyReader([episode]) as reader:
        conns = [c for c in reader.connections if c.topic in ("/image", "/depth", "/camera_info")]
        for conn, _, raw in reader.messages(connections=conns):
            frame_id = reader.deserialize(raw, conn.msgtype).header.frame_id
            if "#" in frame_id:
                seqs.setdefault(conn.topic, set()).add(int(frame_id.rsplit("#", 1)[1]))
    return {t: (len(s), max(s) - min(s) + 1 - len(s)) for t, s in sorted(seqs.items())}


def main() -> int:
    import yaml
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--call-period", type=float, default=1.0)
    parser.add_argument("--sample-period", type=float, default=10.0)
    parser.add_argument("--compression", default="lz4", choices=("none", "lz4", "zstd"))
    parser.add_argument("--keep", action="store_true", help="keep the recorded episode")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak_"))
    env = ros_env()
    print(f"soak for {args.minutes:g} min; start: {load_average()}; logs and episode in {work}", flush=True)
    node = start([str(BIN / "reward_node"), "--ros-args", "-p", "model.name_or_path:=builtin:tiny-spatial",
                  "-p", "model.max_new_tokens:=16", "-p", "target_object:=the orange cylinder"], env,
                 work / "reward_node.log")
    recorder = start([str(BIN / "recorder_node"), "--ros-args", "-p", f"output_dir:={work / 'episodes'}",
                      "-p", "topics:=[image, depth, camera_info, reward, reward_info]",
                      "-p", f"compression:={args.compression}"], env,
                     work / "recorder_node.log")
    trivial = start([sys.executable, str(ROOT / "bench" / "_harness.py"), "trivial"], env, work / "trivial.log")
    camera = start([sys.executable, str(ROOT / "bench" / "_harness.py"), "camera", "--rate", str(args.rate)],
                   env, work / "camera.log")
    infos: list[float] = []
    rss: dict[str, list[tuple[float, float]]] = {"reward_node": [], "recorder_node": []}
    resets: dict[int, list[float]] = {}
    trivial_ms: dict[int, list[float]] = {}
    episode = None
    caller = None
    try:
        caller = Caller("soak_caller")
        caller.node.create_subscription(String, "reward_info", lambda _m: infos.append(time.monotonic()), 100)
        for srv, name in ((Trigger, "/reset"), (SetBool, "/record"), (Trigger, "/bench_trivial/trigger")):
            caller.wait_ready(srv, name)
        deadline = time.monotonic() + 120
        while len(infos) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        _, resp = caller.call_ms(SetBool, "/record", SetBool.Request(data=True))
        if resp is None or not resp.success:
            raise RuntimeError(f"record did not start: {resp}")
        start_t = time.monotonic()
        infos.clear()
        next_sample = start_t
        while time.monotonic() - start_t < args.minutes * 60:
            minute = int((time.monotonic() - start_t) // 60)
            ms, _ = caller.call_ms(Trigger, "/reset", Trigger.Request())
            resets.setdefault(minute, []).append(float("inf") if ms is None else ms)
            ms, _ = caller.call_ms(Trigger, "/bench_trivial/trigger", Trigger.Request())
            trivial_ms.setdefault(minute, []).append(float("inf") if ms is None else ms)
            if time.monotonic() >= next_sample:
                now = time.monotonic() - start_t
                rss["reward_node"].append((now, rss_mb(node.pid)))
                rss["recorder_node"].append((now, rss_mb(recorder.pid)))
                next_sample += args.sample_period
            time.sleep(args.call_period)
        elapsed = time.monotonic() - start_t
        reward_rate = len(infos) / elapsed
        _, resp = caller.call_ms(SetBool, "/record", SetBool.Request(data=False), timeout=300)
        episode = Path(resp.message) if resp is not None and resp.success else None
    finally:
        if caller is not None:
            caller.close()
        for proc in (camera, node, recorder, trivial):
            stop(proc)
    print(f"end: {load_average()}; reward_info {reward_rate:.1f}/s over {elapsed / 60:.1f} min "
          f"(camera {args.rate:g} Hz; the newest frame wins, older ones are dropped by design)")
    for name, samples in rss.items():
        first, last = samples[0][1], samples[-1][1]
        print(f"RSS {name}: {first:.0f} MB at start, {last:.0f} MB at the end, max "
              f"{max(v for _, v in samples):.0f} MB; slope {slope_per_10min(samples):+.1f} MB per 10 min "
              f"({len(samples)} samples)")
    if episode is None:
        print("the episode could not be stopped: no loss figures")
        return 1
    info = yaml.safe_load((episode / "episode.yaml").read_text())
    missing = missing_frames(episode)
    size = sum(f.stat().st_size for f in episode.iterdir())
    print(f"episode: {size / 1e9:.2f} GB on disk ({args.compression}); free on its disk: "
          f"{shutil.disk_usage(episode).free / 1e9:.1f} GB")
    if not args.keep:
        shutil.rmtree(episode)
    print(f"recorded: {info['message_count']} messages ({info['message_counts']}), finalized: "
          f"{info['finalized']}; the recorder refused (queue full) {info['frames_dropped']}")
    for topic, (n, lost) in missing.items():
        print(f"  {topic}: {lost} of {n + lost} numbered camera messages missing between the first and last "
              f"recorded ({100 * lost / max(1, n + lost):.2f} %: lost in DDS before the recorder took them)")
    print(f"camera: {(work / 'camera.log').read_text().strip().splitlines()[-1]}")
    print("reset latency by minute (ms), beside a trivial Trigger server in the same run:")
    for minute in sorted(resets):
        print(f"  min {minute:3d}: reset {describe_ms(resets[minute])}")
        print(f"           trivial {describe_ms(trivial_ms.get(minute, []))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sustained zero-loss rate of recorder_node, beside the bag writer alone, in the same run.

    .venv/bin/python bench/recorder.py                 # 60 s, 640x480 rgb8 + 16UC1 depth at 30 Hz,
    .venv/bin/python bench/recorder.py --seconds 20    # joint states at 100 Hz
    .venv/bin/python bench/recorder.py --seconds 20 --compression lz4   # the recorder compressing

Starts `recorder_node` as a user would (its console script) and the publisher
(test/recorder_publisher.py) as another process, records one episode over real topics with the
package's Fast DDS profile, and counts the numbered messages in the bag (loss must be 0). Then the
episodes core alone (no ROS) writes the same bytes as fast as it can. Prints messages/s and MB/s
of both, the recorder's CPU, and their ratios. Figures depend on the machine (cores, disk, page
cache): compare the ratio, not the absolute numbers. Writes go to the page cache; a slow disk
shows up as queue growth, not here.

Chunk compression (the recorder's ``compression`` parameter) is then measured on the writer alone for
none, lz4 and zstd: MB/s of input and the size ratio, on two kinds of frames that bracket a real camera:
the publisher's random pixels (incompressible, the worst case) and the demo scene's rendered RGB-D (flat
colours, the best case).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bench_roslog_"))
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from spatialvlm_ros.spatial.episodes import EpisodeWriter, TopicSpec, load_episode_info  # noqa: E402

PUBLISHER = ROOT / "test" / "recorder_publisher.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def call_record(node: Node, start: bool) -> SetBool.Response:
    client = node.create_client(SetBool, "record")
    if not client.wait_for_service(timeout_sec=30):
        raise SystemExit("recorder_node did not offer /record within 30 s")
    future = client.call_async(SetBool.Request(data=start))
    rclpy.spin_until_future_complete(node, future, timeout_sec=120)
    node.destroy_client(client)
    return future.result()


def record_over_ros(args: argparse.Namespace, out: Path) -> dict:
    recorder = subprocess.Popen(
        [str(Path(sys.executable).parent / "recorder_node"), "--ros-args",
         "-p", f"output_dir:={out}", "-p", "topic_discovery_period_s:=0.2",
         "-p", "topics:=[image, depth, camera_info, joint_states]", "-p", f"compression:={args.compression}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = Node("recorder_bench_client")
    try:
        started = call_record(node, True)
        if not started.success:
            raise SystemExit(f"record true failed: {started.message}")
        report_path = out / "published.json"
        publisher = subprocess.Popen(
            [sys.executable, str(PUBLISHER), "--seconds", str(args.seconds), "--no-hash",
             "--warmup-s", "2", "--image-hz", str(args.image_hz), "--joint-hz",
             str(args.joint_hz), "--width", str(args.width), "--height", str(args.height),
             "--report", str(report_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in publisher.stdout:
            if line.strip() == "PUBLISHING":
                cpu0, t0 = cpu_seconds(recorder.pid), time.monotonic()
                break
        else:
            raise SystemExit("publisher failed: " + publisher.communicate()[0])
        publisher_output = publisher.communicate()[0]
        cpu1, t1 = cpu_seconds(recorder.pid), time.monotonic()
        if publisher.returncode != 0:
            raise SystemExit("publisher failed: " + publisher_output)
        time.sleep(1.0)  # acknowledged messages are in the recorder's reader; let it take them
        stopped = call_record(node, False)
        rss = peak_rss_mb(recorder.pid)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        recorder.terminate()
        recorder.communicate(timeout=60)
    report = json.loads(report_path.read_text())
    return {"episode": Path(stopped.message), "report": report, "cpu_s": cpu1 - cpu0,
            "wall_s": t1 - t0, "rss_mb": rss}


def count_numbered(episode: Path) -> tuple[Counter, int, list[tuple[TopicSpec, int, bytes]]]:
    """Numbered messages per topic, their bytes, and a sample of messages for the writer run."""
    counts: Counter = Counter()
    nbytes = 0
    sample: list[tuple[TopicSpec, int, bytes]] = []
    sample_bytes = 0
    with AnyReader([episode]) as reader:
        specs = {c.topic: TopicSpec(c.topic, c.msgtype) for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            if b"warmup" in raw[:64]:
                continue
            counts[conn.topic.rsplit("/", 1)[-1]] += 1
            nbytes += len(raw)
            if sample_bytes < 512 << 20:  # enough distinct messages to cycle through
                sample.append((specs[conn.topic], stamp, raw))
                sample_bytes += len(raw)
    return counts, nbytes, sample


def write_alone(sample: list, n_messages: int, out: Path, compression: str = "none") -> dict:
    """The episodes core writing n_messages (cycling the sample) as fast as it can."""
    directory = out / f"writer_alone_{compression}_{time.monotonic_ns()}"
    writer = EpisodeWriter(directory, max_queue_bytes=256 << 20, compression=compression)
    writer.open(sorted({spec for spec, _, _ in sample}, key=lambda s: s.name))
    cpu0, t0 = time.process_time(), time.perf_counter()
    nbytes = 0
    for i in range(n_messages):
        spec, _, raw = sample[i % len(sample)]
        while not writer.put(spec.name, raw, i + 1):  # queue full: wait for the disk
            time.sleep(0.0005)
        nbytes += len(raw)
    summary = writer.finalize("bench")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert summary.message_count == n_messages, summary
    size = sum(f.stat().st_size for f in directory.glob("*.mcap"))
    return {"wall_s": wall, "cpu_s": cpu, "bytes": nbytes, "file_bytes": size}


def scene_sample(frames: int = 30) -> list[tuple[TopicSpec, int, bytes]]:
    """The demo scene's RGB-D frames as the recorder would receive them (flat colours: compress well)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    scene = ApproachScene(frames=frames)
    image, depth = TopicSpec("/image", "sensor_msgs/msg/Image"), TopicSpec("/depth", "sensor_msgs/msg/Image")
    out = []
    for i in range(frames):
        f = scene.render(i)
        out.append((image, i, serialize_message(Image(**rgb_to_image_fields(f.rgb, "rgb8")))))
        out.append((depth, i, serialize_message(Image(**metres_to_depth_fields(f.depth_m, "16UC1")))))
    return out


def compression_table(samples: dict[str, list], n_messages: int, out: Path) -> None:
    print("chunk compression, bag writer alone (MB/s of input on this machine; ratio = input / file):")
    for kind, sample in samples.items():
        n = min(n_messages, 4 * len(sample))
        base = None
        for compression in ("none", "lz4", "zstd"):
            r = write_alone(sample, n, out, compression)
            mbs = r["bytes"] / r["wall_s"] / 1e6
            base = base or mbs
            print(f"  {kind:<28} {compression:<5} {mbs:8.1f} MB/s ({mbs / base:.2f}x of none)  "
                  f"ratio {r['bytes'] / r['file_bytes']:.2f}  CPU {1e3 * r['cpu_s'] / (r['bytes'] / 1e6):.2f} ms/MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--image-hz", type=float, default=30.0)
    parser.add_argument("--joint-hz", type=float, default=100.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--keep", action="store_true", help="keep the episode directories")
    parser.add_argument("--compression", default="none", choices=("none", "lz4", "zstd"),
                        help="the recorder node's compression parameter for the ROS run")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="recorder_bench_")
    out = Path(tmp.name)
    ros = record_over_ros(args, out)
    published = {t: r["count"] for t, r in ros["report"]["topics"].items()}
    counts, nbytes, sample = count_numbered(ros["episode"])
    info = load_episode_info(ros["episode"])
    n_pub, n_rec = sum(published.values()), sum(counts.values())
    lost = {t: published[t] - counts.get(t, 0) for t in published if published[t] != counts.get(t)}
    alone = write_alone(sample, n_rec, out)

    wall = ros["report"]["elapsed_s"]
    rec_mps, rec_mbs = n_rec / wall, nbytes / wall / 1e6
    alone_mps, alone_mbs = n_rec / alone["wall_s"], alone["bytes"] / alone["wall_s"] / 1e6
    rec_cpu_per_mb = ros["cpu_s"] / (nbytes / 1e6)
    alone_cpu_per_mb = alone["cpu_s"] / (alone["bytes"] / 1e6)
    print(f"workload: {args.seconds:g} s of {args.width}x{args.height} rgb8 + 16UC1 depth + "
          f"camera_info at {args.image_hz:g} Hz, joint states at {args.joint_hz:g} Hz, "
          f"reliable, over real topics from a separate process; recorder compression: {args.compression}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"recorder_node: published {n_pub}, recorded {n_rec}, lost {n_pub - n_rec} {lost or ''}"
          f"(episode.yaml frames_dropped={info['frames_dropped']})")
    cpu_pct = 100 * ros["cpu_s"] / ros["wall_s"]
    print(f"  sustained {rec_mps:8.1f} msgs/s {rec_mbs:8.1f} MB/s   recorder CPU "
          f"{cpu_pct:.0f}% of a core ({1e3 * rec_cpu_per_mb:.2f} ms/MB), "
          f"peak RSS {ros['rss_mb']:.0f} MB")
    print(f"bag writer alone (episodes core, same bytes, no ROS): {n_rec} msgs in "
          f"{alone['wall_s']:.2f} s")
    print(f"  capacity  {alone_mps:8.1f} msgs/s {alone_mbs:8.1f} MB/s   CPU "
          f"{1e3 * alone_cpu_per_mb:.2f} ms/MB")
    print(f"ratio writer-alone / recorder: {alone_mbs / rec_mbs:.1f}x throughput headroom; "
          f"recorder CPU per MB is {rec_cpu_per_mb / alone_cpu_per_mb:.1f}x the writer's "
          f"(the cost of DDS + rclpy on top of the bag)")
    compression_table({"random pixels (worst case)": sample[:600], "demo scene (best case)": scene_sample()},
                      n_rec, out)
    if args.keep:
        tmp.cleanup = lambda: None  # type: ignore[method-assign]
        print(f"episodes kept in {out}")
    else:
        tmp.cleanup()
    return 0 if n_pub == n_rec else 1


if __name__ == "__main__":
    sys.exit(main())

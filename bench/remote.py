"""The model off the process: in-process vs an OpenAI-compatible server on the same frames, and annotation
in one process vs on a local Ray instance. One run, every ratio against a baseline measured in it.

    .venv/bin/python bench/remote.py                  # starts `transformers serve` on the shipped model (CPU)
    .venv/bin/python bench/remote.py --quick          # fewer frames, for a quick look
    .venv/bin/python bench/remote.py --base-url http://gpu-box:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct \
        --in-process-model Qwen/Qwen2.5-VL-7B-Instruct --in-flight 8     # a real server (vLLM) and model

Part 1, the same demo-camera frames (640x480, the synthetic approach) through:
  * the in-process `vlm` estimator, one frame per call (the reward node's way): per-frame latency, frames/s;
  * the `remote` estimator, one request in flight: per-frame latency, frames/s, and the client's own CPU
    time per frame (PNG encoding, HTTP, JSON: the cost left on the robot);
  * the `remote` estimator with N requests in flight (--in-flight): frames/s.
  Answers are compared frame by frame (greedy, PNG: they should be the same).
Part 2 (--no-ray skips it), an episode of --annotate-frames frames annotated end to end by the same
Annotator: one process, then `--ray local` with --ray-actors actors (model copies); frames/s without the
model loading, which is printed beside it.

Without --base-url the server is `transformers serve` on the shipped tiny spatial model, on this
machine's CPU, on a free 127.0.0.1 port: it shares the CPU with the client, so the remote figures here
say what the protocol costs, not what a GPU box gains. Exit status 0; 2 on a set-up error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))  # model_server.py: the tests' `transformers serve` launcher
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads distort CPU timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spatialvlm_ros.spatial.estimator import Frame, ModelConfig, build_estimator  # noqa: E402
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE, distance_query  # noqa: E402
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene  # noqa: E402


def per_frame(estimator, frames, query) -> tuple[list[float], list[list[str]], float, float]:
    """One frame per estimate() call: latencies (ms), answers, wall seconds, this process's CPU seconds."""
    latencies, answers = [], []
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        started = time.perf_counter()
        (estimate,) = estimator.estimate([(frame, query)])
        latencies.append((time.perf_counter() - started) * 1e3)
        answers.append(estimate.raw_answers)
    return latencies, answers, time.perf_counter() - wall, time.process_time() - cpu


def describe(name: str, latencies: list[float], wall_s: float, n: int) -> float:
    fps = n / wall_s
    p90 = sorted(latencies)[max(0, int(0.9 * len(latencies)) - 1)]
    print(f"{name:34s} median {statistics.median(latencies):7.1f} ms  p90 {p90:7.1f} ms  {fps:6.2f} frames/s")
    return fps


def part_one(args, server_url: str, model_id: str) -> None:
    scene = ApproachScene(640, 480, frames=args.frames)
    frames = [Frame(scene.render(i).rgb) for i in range(args.frames)]
    query = distance_query(DEFAULT_DISTANCE_TEMPLATE, "the robot gripper", scene.target_description)
    print(f"\n== {args.frames} frames 640x480, one question each, greedy, max {args.max_new_tokens} new tokens ==")
    local = build_estimator(ModelConfig(name_or_path=args.in_process_model, device=args.device,
                                        max_new_tokens=args.max_new_tokens))
    remote = build_estimator(ModelConfig(backend="remote", name_or_path=model_id, base_url=server_url,
                                         max_new_tokens=args.max_new_tokens, timeout_s=120.0))
    many = build_estimator(ModelConfig(backend="remote", name_or_path=model_id, base_url=server_url,
                                       max_new_tokens=args.max_new_tokens, timeout_s=120.0,
                                       max_in_flight=args.in_flight))
    try:
        for estimator in (local, remote):  # warm-up, unmeasured
            estimator.estimate([(frames[0], query)])
        lat_local, ans_local, wall_local, _ = per_frame(local, frames, query)
        encode_before = remote.client_seconds
        lat_remote, ans_remote, wall_remote, cpu_remote = per_frame(remote, frames, query)
        encode_s = remote.client_seconds - encode_before
        started = time.perf_counter()
        batch = many.estimate([(f, query) for f in frames])
        wall_many = time.perf_counter() - started
    finally:
        for estimator in (local, remote, many):
            estimator.close()
    fps_local = describe("in process (vlm), 1 frame/call", lat_local, wall_local, len(frames))
    fps_remote = describe("remote, 1 request in flight", lat_remote, wall_remote, len(frames))
    fps_many = len(frames) / wall_many
    print(f"{'remote, ' + str(args.in_flight) + ' requests in flight':34s} {'':41s}{fps_many:6.2f} frames/s")
    same = sum(a == b for a, b in zip(ans_local, ans_remote, strict=True))
    same_many = sum(a == e.raw_answers for a, e in zip(ans_local, batch, strict=True))
    print(f"client's own CPU time per frame (remote, this process): {1e3 * cpu_remote / len(frames):.1f} ms, "
          f"of which resizing and encoding the PNG {1e3 * encode_s / len(frames):.1f} ms")
    print(f"answers equal to in-process: {same}/{len(frames)} (1 in flight), {same_many}/{len(frames)} "
          f"({args.in_flight} in flight)")
    print(f"ratio remote(1) / in-process frames/s: {fps_remote / fps_local:.2f}x; "
          f"remote({args.in_flight}) / remote(1): {fps_many / fps_remote:.2f}x; "
          f"median latency remote(1) / in-process: "
          f"{statistics.median(lat_remote) / statistics.median(lat_local):.2f}x")


def part_two(args) -> None:
    from annotate import write_episode  # bench/annotate.py: the synthetic approach as a recorded episode

    from spatialvlm_ros.spatial import fleet
    from spatialvlm_ros.spatial.annotation import ANNOTATIONS_FILE, AnnotateSettings, Annotator

    work = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        episode = work / "episode"
        write_episode(episode, args.annotate_frames, 640, 480)
        config = ModelConfig(name_or_path=args.in_process_model, device=args.device,
                             max_new_tokens=args.max_new_tokens)
        values = {f"model.{f}": getattr(config, f) for f in config.__dataclass_fields__}
        print(f"\n== annotation: {args.annotate_frames} frames 640x480 end to end, batch size {args.batch_size} "
              "per model copy ==")
        started = time.perf_counter()
        single = Annotator(AnnotateSettings(model=values, batch_size=args.batch_size, output_dir=work / "one",
                                            progress=False), lambda: build_estimator(config))
        result_one = single.annotate(episode)
        single.close()
        fps_one = result_one.new / result_one.seconds
        print(f"one process:            {fps_one:6.2f} frames/s  ({result_one.seconds:.1f} s; model loaded in "
              f"{single.load_seconds:.1f} s; {time.perf_counter() - started:.1f} s in all)")
        started = time.perf_counter()
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private instance that dies with this run
        fleet.connect("local")
        connected = time.perf_counter() - started
        actors = args.ray_actors
        ray_run = Annotator(AnnotateSettings(model=values, batch_size=args.batch_size * actors,
                                             output_dir=work / "ray", progress=False),
                            lambda: fleet.RayEstimator(config, actors, args.batch_size))
        result_ray = ray_run.annotate(episode)
        ray_run.close()
        fps_ray = result_ray.new / result_ray.seconds
        import pyarrow.parquet as pq

        same = (pq.read_table(work / "one" / "episode" / ANNOTATIONS_FILE, columns=["raw_answers"]).to_pylist()
                == pq.read_table(work / "ray" / "episode" / ANNOTATIONS_FILE, columns=["raw_answers"]).to_pylist())
        print(f"Ray local, {actors} actor(s):   {fps_ray:6.2f} frames/s  ({result_ray.seconds:.1f} s; Ray started "
              f"in {connected:.1f} s, actors loaded their models in {ray_run.load_seconds:.1f} s; "
              f"{'same rows' if same else 'ROWS DIFFER'})")
        print(f"ratio Ray local / one process: {fps_ray / fps_one:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--frames", type=int, default=24, help="frames for part 1 (default 24)")
    parser.add_argument("--annotate-frames", type=int, default=32, help="frames for part 2 (default 32)")
    parser.add_argument("--quick", action="store_true", help="8 frames and 8 annotated frames")
    parser.add_argument("--in-flight", type=int, default=4, help="requests in flight for the N figure")
    parser.add_argument("--base-url", default=None, help="an already running server (default: start one)")
    parser.add_argument("--model", default=None, help="the served model id (with --base-url)")
    parser.add_argument("--in-process-model", default="builtin:tiny-spatial",
                        help="the in-process baseline and the annotator's model (default: builtin:tiny-spatial)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4, help="annotation batch per model copy")
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.annotate_frames = 8, 8
    if min(args.frames, args.annotate_frames, args.in_flight, args.batch_size, args.ray_actors) < 1:
        parser.error("counts must be at least 1")
    if args.base_url and not args.model:
        parser.error("--base-url needs --model (the id the server serves)")
    print(f"machine: {os.cpu_count()} CPUs; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    server = None
    try:
        if args.base_url:
            url, model_id = args.base_url, args.model
        else:
            from model_server import ModelServer

            from spatialvlm_ros.models import resolve_model_name

            started = time.perf_counter()
            log = Path(tempfile.mkdtemp(prefix="bench_serve_")) / "serve.log"
            server = ModelServer(Path(resolve_model_name(args.in_process_model)), log)
            url, model_id = server.base_url, server.model_id
            print(f"server: transformers serve {model_id} on {url} (CPU), up in "
                  f"{time.perf_counter() - started:.1f} s")
        part_one(args, url, model_id)
    except Exception as exc:  # noqa: BLE001 - a set-up error is reported, not a traceback
        print(f"bench/remote.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    if not args.no_ray:
        part_two(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Annotator throughput: frames/s at batch size 1 and at 8 (or --batch-sizes), same model, same frames.

    .venv/bin/python bench/annotate.py                         # 48 frames at 640x480, ~1 min on 2 CPU cores
    .venv/bin/python bench/annotate.py --model Qwen/Qwen2.5-VL-3B-Instruct --frames 64 --device cuda

Writes one episode (the synthetic approach: 640x480 rgb8, 16UC1 depth, camera_info) with the episodes
core writer, loads the model once, then annotates the episode end to end (bag reading, decoding, the
model, Parquet, the plot) once per batch size with --force, through the same Annotator the
`spatialvlm_annotate` command runs. Prints frames/s for each, the share of the time spent in the model,
the ratio to batch size 1 (the baseline measured in the same run), and whether the answers were the same.

Model: --model, else the shipped tiny spatial model (builtin:tiny-spatial) when it is there, else a tiny
random-weight Qwen2.5-VL built offline in .cache/tiny_qwen2_5_vl (its words are noise; its timings are
still real generate() calls, though of a ~1 MB model on images it downsizes to 112x112).
Exit status 0; 2 on a set-up error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Busy-waiting OpenMP threads make CPU timings slow and erratic on a shared machine (bench/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from spatialvlm_ros.spatial.annotation import ANNOTATIONS_FILE, AnnotateSettings, Annotator  # noqa: E402
from spatialvlm_ros.spatial.episodes import EpisodeWriter, TopicSpec, default_typestore  # noqa: E402
from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator  # noqa: E402
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene  # noqa: E402


def write_episode(directory: Path, frames: int, width: int, height: int) -> ApproachScene:
    """The approach as a recorded episode, serialized with rosbags' typestore (no ROS needed)."""
    import numpy as np

    from spatialvlm_ros.spatial.imaging import metres_to_depth_fields, rgb_to_image_fields

    ts = default_typestore()
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    Image, CameraInfo = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = ts.types["sensor_msgs/msg/RegionOfInterest"]
    scene = ApproachScene(width, height, frames=frames)
    k = scene.intrinsics
    writer = EpisodeWriter(directory, task="bench", target_object=scene.target_description)
    writer.open([TopicSpec("/camera/image", "sensor_msgs/msg/Image"),
                 TopicSpec("/camera/depth", "sensor_msgs/msg/Image"),
                 TopicSpec("/camera/camera_info", "sensor_msgs/msg/CameraInfo")])

    def image(fields: dict, header) -> bytes:
        data = np.frombuffer(fields["data"], np.uint8)
        msg = Image(header, fields["height"], fields["width"], fields["encoding"],
                    fields["is_bigendian"], fields["step"], data)
        return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    for i in range(frames):
        stamp = 1_700_000_000_000_000_000 + i * 33_333_333
        header = Header(Time(*divmod(stamp, 1_000_000_000)), "camera_optical")
        frame = scene.render(i)
        info = CameraInfo(header, height, width, "plumb_bob", np.zeros(5),
                          np.array([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], float), np.eye(3).ravel(),
                          np.zeros(12), 0, 0, RegionOfInterest(0, 0, 0, 0, False))
        writer.put("/camera/camera_info", bytes(ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo")), stamp)
        writer.put("/camera/image", image(rgb_to_image_fields(frame.rgb), header), stamp + 1_000)
        writer.put("/camera/depth", image(metres_to_depth_fields(frame.depth_m), header), stamp + 2_000)
    summary = writer.finalize("bench")
    if not summary.bag_readable:
        raise SystemExit(f"could not write the bench episode: {summary.error}")
    return scene


def default_model() -> tuple[str, str]:
    try:
        from spatialvlm_ros.models import shipped_model_path

        shipped_model_path()
        return "builtin:tiny-spatial", "shipped tiny spatial model (builtin:tiny-spatial)"
    except FileNotFoundError:
        pass
    path = ROOT / ".cache" / "tiny_qwen2_5_vl"
    if not (path / "config.json").is_file():
        from spatialvlm_ros.tiny_models import build_tiny_qwen2_5_vl

        build_tiny_qwen2_5_vl(path)
    return str(path), f"TINY RANDOM-WEIGHT Qwen2.5-VL at {path} (the shipped model is not there)"


class Timed:
    """The estimator, timing its estimate() calls (the model's share of the annotator's time)."""

    def __init__(self, inner) -> None:
        self.inner, self.backend, self.model_name = inner, inner.backend, inner.model_name
        self.seconds = 0.0

    @property
    def max_batch_size(self) -> int:
        return getattr(self.inner, "max_batch_size", 0)

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if hasattr(self.inner, "max_batch_size"):
            self.inner.max_batch_size = value

    def estimate(self, items, samples: int = 1):
        started = time.perf_counter()
        try:
            return self.inner.estimate(items, samples)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--frames", type=int, default=48, help="frames in the episode (default 48)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8],
                        help="batch sizes to compare; the first is the baseline (default: 1 8)")
    parser.add_argument("--model", default=None, help="hub id or local checkpoint (default: see above)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--keep", action="store_true", help="keep the episode and its annotations")
    args = parser.parse_args(argv)
    if args.frames < 1 or min(args.batch_sizes) < 1:
        parser.error("--frames and --batch-sizes must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="bench_annotate_"))
    try:
        model, label = (args.model, args.model) if args.model else default_model()
        episode = work / "episode"
        started = time.perf_counter()
        scene = write_episode(episode, args.frames, args.width, args.height)
        print(f"episode: {args.frames} frames {args.width}x{args.height} rgb8 + 16UC1 depth + camera_info "
              f"({time.perf_counter() - started:.1f} s to render and write)")
        config = ModelConfig(name_or_path=model, device=args.device, dtype=args.dtype,
                             max_new_tokens=args.max_new_tokens)
        started = time.perf_counter()
        estimator = Timed(build_estimator(config))
        inner = estimator.inner
        print(f"model: {label}; {getattr(inner, 'device', '?')}, {getattr(inner, 'dtype', '?')}; "
              f"loaded in {time.perf_counter() - started:.1f} s")
        model_values = {f"model.{f}": getattr(config, f) for f in config.__dataclass_fields__}
        # Warm-up (unmeasured): first calls pay for kernel selection and allocator growth.
        warm = Annotator(AnnotateSettings(model=model_values, batch_size=max(args.batch_sizes),
                                          every=max(1, args.frames // max(args.batch_sizes)),
                                          output_dir=work / "warmup", progress=False), lambda: estimator)
        warm.annotate(episode)

        results = []
        for batch_size in args.batch_sizes:
            estimator.seconds = 0.0
            settings = AnnotateSettings(model=model_values, batch_size=batch_size, force=True,
                                        output_dir=work / f"batch{batch_size}", progress=False)
            result = Annotator(settings, lambda: estimator).annotate(episode)
            import pyarrow.parquet as pq

            answers = pq.read_table(work / f"batch{batch_size}" / "episode" / ANNOTATIONS_FILE,
                                    columns=["raw_answers"]).column("raw_answers").to_pylist()
            results.append((batch_size, result, estimator.seconds, answers))
        estimator.inner.close()

        base_fps = results[0][1].new / results[0][1].seconds
        print(f"target: {scene.target_description!r}, {results[0][1].new} frames per run, end to end "
              "(bag -> decode -> model -> Parquet + plot)")
        for batch_size, result, model_s, answers in results:
            fps = result.new / result.seconds
            same = "same answers as the baseline" if answers == results[0][3] else "answers differ"
            print(f"batch size {batch_size:3d}: {fps:7.2f} frames/s  ({result.seconds:6.2f} s, "
                  f"{100 * model_s / result.seconds:3.0f}% in the model, {result.with_distance} with a "
                  f"distance; {same})")
        for batch_size, result, _, _ in results[1:]:
            ratio = (result.new / result.seconds) / base_fps
            print(f"ratio batch {batch_size} / batch {results[0][0]}: {ratio:.2f}x")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

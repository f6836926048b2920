"""spatialvlm_annotate: label every frame of recorded episodes offline, in batches, with the nodes' estimators.

    spatialvlm_annotate ~/spatialvlm_episodes --model Qwen/Qwen2.5-VL-7B-Instruct --batch-size 8
    spatialvlm_annotate ~/spatialvlm_episodes --model Qwen/Qwen2.5-VL-7B-Instruct --ray auto   # a Ray cluster

Writes annotations.parquet and reward.png per episode (see the README) and prints one line per episode.
The model and reward options are generated from the nodes' parameter declarations (params.py), so they
are the same names, defaults and ranges as the reward node's. No ROS install needed: bags are decoded
with rosbags. Exit status: 0 all annotated, 1 some episodes failed (named at the end), 2 bad arguments,
3 the model could not be loaded, 130 / 143 interrupted by SIGINT / SIGTERM (re-run the same command to
continue: what was answered before is kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spatialvlm_ros.batch_cli import (  # noqa: F401 - the exit codes are this command's API too
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    add_ray_options,
    add_spec,
    check_ray_options,
    command_session,
    ray_estimator_factory,
    run_sources,
)
from spatialvlm_ros.params import MODEL_PARAMS, REWARD_PARAMS, SYNC_PARAMS
from spatialvlm_ros.spatial.reward import REWARD_MODES

# The reward node's shaping parameters, except the mode: the annotator computes every mode.
_SHAPING_PARAMS = [s for s in REWARD_PARAMS.specs if s.name.startswith("reward.") and s.name != "reward.mode"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spatialvlm_annotate",
        description="Annotate recorded episodes offline: ask the gripper-to-target distance on every "
        "frame, in batches, and write annotations.parquet and reward.png per episode. Resumable: "
        "re-running continues where a run stopped and never duplicates rows.",
    )
    parser.add_argument("episodes", nargs="+", type=Path,
                        help="episode directories, or folders of them")
    what = parser.add_argument_group("what to ask")
    what.add_argument("--target", default=None,
                      help="target object in plain words (default: the episode's target_object)")
    add_spec(what, REWARD_PARAMS["gripper_description"], "--gripper")
    add_spec(what, REWARD_PARAMS["question_template"], "--question-template")
    add_spec(what, REWARD_PARAMS["samples_per_frame"], "--samples")
    topics = parser.add_argument_group("topics (a relative name matches the end of a topic)")
    topics.add_argument("--image-topic", default=None,
                        help="default: the recorded sensor_msgs Image/CompressedImage topic, "
                        "preferring one named image")
    topics.add_argument("--depth-topic", default=None,
                        help="aligned depth (16UC1 mm or 32FC1 m); default: the recorded Image topic "
                        "with depth in its name, if any; '' for none")
    topics.add_argument("--camera-info-topic", default=None,
                        help="default: the CameraInfo topic beside the image topic, if any; '' for none")
    for spec in SYNC_PARAMS:  # the nodes' sync.* parameters: the same depth joins a frame live and here
        add_spec(topics, spec)
    run = parser.add_argument_group("how")
    run.add_argument("--every", type=int, default=1, metavar="K", help="annotate every K-th frame (default: 1, all)")
    run.add_argument("--batch-size", type=int, default=8, metavar="N",
                     help="frames per model call (batched generation; default: 8)")
    run.add_argument("--checkpoint-every", type=int, default=256, metavar="N",
                     help="write finished rows to disk at least every N frames (and every 60 s; default: 256)")
    run.add_argument("--output", type=Path, default=None,
                     help="write OUTPUT/<episode name>/annotations.parquet instead of into each "
                     "episode directory")
    run.add_argument("--force", action="store_true", help="recompute everything (discard earlier rows)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    add_ray_options(parser, "frame batches")
    model = parser.add_argument_group("model (the nodes' model.* parameters)")
    for spec in MODEL_PARAMS:
        flags = (f"--{spec.name}", "--model") if spec.name == "model.name_or_path" else ()
        add_spec(model, spec, *flags)
    reward = parser.add_argument_group("reward shaping (the reward node's reward.* parameters)")
    reward.add_argument("--reward.modes", dest="reward.modes", nargs="+", choices=REWARD_MODES,
                        default=list(REWARD_MODES), metavar="MODE",
                        help=f"shaping modes to compute, one column each (accepted: {', '.join(REWARD_MODES)})")
    for spec in _SHAPING_PARAMS:
        add_spec(reward, spec)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Validate against the parameter specs; returns the model.* values."""
    values = vars(args)
    specs = [*MODEL_PARAMS, *_SHAPING_PARAMS, *SYNC_PARAMS, REWARD_PARAMS["gripper_description"],
             REWARD_PARAMS["question_template"], REWARD_PARAMS["samples_per_frame"]]
    for spec in specs:
        reason = spec.validate(values[spec.name])
        if reason:
            parser.error(reason)
    check_ray_options(parser, args)
    for name in ("every", "batch_size", "checkpoint_every"):
        if values[name] is not None and values[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.target is not None and not args.target.strip():
        parser.error("--target is empty")
    from spatialvlm_ros.spatial.questions import DISTANCE_FIELDS, check_template

    reason = check_template(values["question_template"], DISTANCE_FIELDS, required=("target",))
    if reason:
        parser.error(reason)
    return {spec.name: values[spec.name] for spec in MODEL_PARAMS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    model_values = _check(parser, args)
    with command_session("spatialvlm_annotate", args.verbose):
        return _run(parser, args, model_values)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, model_values: dict[str, Any]) -> int:
    # Imported after parsing so that --help and argument errors are instant.
    from spatialvlm_ros.spatial.annotation import AnnotateSettings, Annotator
    from spatialvlm_ros.spatial.episode_frames import EpisodeFailure, find_episodes
    from spatialvlm_ros.spatial.estimator import ModelConfig, ModelLoadError, build_estimator
    from spatialvlm_ros.spatial.reward import RewardConfig
    from spatialvlm_ros.spatial.stamp_sync import SyncPolicy

    try:
        sync = SyncPolicy.from_params(vars(args))
        model_config = ModelConfig.from_params(model_values)
        shaping = RewardConfig(**{p.name[len("reward."):]: getattr(args, p.name) for p in _SHAPING_PARAMS})
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        episodes = find_episodes(args.episodes)
    except EpisodeFailure as exc:
        print(f"spatialvlm_annotate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    values = vars(args)
    batch_size, make_estimator = args.batch_size, (lambda: build_estimator(model_config, require_server=True))
    if args.ray is not None:
        try:
            batch_size, make_estimator = ray_estimator_factory("spatialvlm_annotate", args, model_config)
        except ModelLoadError as exc:
            print(f"spatialvlm_annotate: {exc}", file=sys.stderr)
            return EXIT_MODEL
    settings = AnnotateSettings(
        model=model_values, target_object=args.target, gripper=values["gripper_description"],
        question_template=values["question_template"], image_topic=args.image_topic,
        depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic,
        samples=values["samples_per_frame"], every=args.every, batch_size=batch_size, shaping=shaping,
        reward_modes=tuple(dict.fromkeys(values["reward.modes"])), output_dir=args.output,
        force=args.force, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress and sys.stderr.isatty(), sync=sync,
    )
    annotator = Annotator(settings, make_estimator)
    code, _ = run_sources("spatialvlm_annotate", episodes, annotator.annotate, annotator.close, "episode",
                          "the frames answered so far are saved")
    return code


if __name__ == "__main__":
    sys.exit(main())

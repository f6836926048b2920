"""spatialvlm_synthesize: turn recorded episodes and image folders into a spatial VQA dataset (SpatialVLM's
data engine on the robot's own frames).

    spatialvlm_synthesize ~/spatialvlm_episodes --output ~/spatial_vqa --objects "red cup" "blue bowl"

Writes DIR/data/*.parquet (``datasets.load_dataset("parquet", data_dir=DIR)``) and DIR/README.md (the
card). Objects are found and measured by the geometric backend (model.detector, model.depth_source,
model.depth_model: the nodes' parameters), frames are selected, questions are drawn from templates (see
the README's "data engine" section). ``--ray [ADDRESS]`` measures frame batches on Ray actors, one model
copy each. Exit status as spatialvlm_annotate (batch_cli.py): 0 all sources done, 1 some failed (named at
the end), 2 bad arguments, 3 a model could not be loaded, 130 / 143 interrupted by SIGINT / SIGTERM (re-run
the same command to continue: finished batches are kept, none is duplicated).
"""

from __future__ import annotations

import argparse
import shlex
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
from spatialvlm_ros.params import MODEL_PARAMS

# The geometric backend's parameters (the data engine measures with it); the backend itself is fixed.
_GEOMETRIC = ("model.device", "model.dtype", "model.cpu_threads", "model.trust_remote_code", "model.detector",
              "model.detector_threshold", "model.depth_source", "model.depth_model", "model.segmenter",
              "model.fallback_hfov_deg")
_MODEL_SPECS = [s for s in MODEL_PARAMS if s.name in _GEOMETRIC]


def _kinds(text: str) -> tuple[str, ...]:
    from spatialvlm_ros.spatial.vqa.templates import KINDS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown question kinds {bad or '(none)'}; accepted: {', '.join(KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    from spatialvlm_ros.spatial.vqa.selection import SelectionSettings
    from spatialvlm_ros.spatial.vqa.templates import KINDS, TemplateSettings

    t, sel = TemplateSettings(), SelectionSettings()
    p = argparse.ArgumentParser(
        prog="spatialvlm_synthesize",
        description="Synthesize spatial question-answer pairs from recorded episodes (rosbag2 from "
        "recorder_node) and image folders into a dataset directory. Resumable: re-running continues "
        "where a run stopped and never duplicates rows.")
    p.add_argument("sources", nargs="+", type=Path,
                   help="episode directories, image folders, or folders of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset directory to write")
    what = p.add_argument_group("what to ask about")
    what.add_argument("--objects", nargs="*", default=[], metavar="DESCRIPTION",
                      help="object descriptions to detect (the vocabulary), e.g. 'red cup' 'blue bowl'")
    what.add_argument("--no-target-object", action="store_true",
                      help="do not add each episode's target_object to the vocabulary")
    what.add_argument("--questions-per-frame", type=int, default=t.questions_per_frame, metavar="N")
    what.add_argument("--qualitative-share", type=float, default=t.qualitative_share, metavar="X",
                      help="share of qualitative questions (default %(default)s)")
    what.add_argument("--kinds", type=_kinds, default=t.kinds, metavar="K1,K2",
                      help=f"question kinds to ask (default all: {', '.join(KINDS)})")
    what.add_argument("--position-margin", type=float, default=t.position_margin_m, metavar="M",
                      help="left/right, above/below, front/behind only when centres differ by this [m]")
    what.add_argument("--size-margin", type=float, default=t.size_margin, metavar="X",
                      help="closer/taller/wider only when one is this much more (relative)")
    what.add_argument("--min-quantity", type=float, default=t.min_quantity_m, metavar="M",
                      help="quantities below this are not asked [m]")
    sel_group = p.add_argument_group("frame selection (0 turns a check off)")
    sel_group.add_argument("--min-sharpness", type=float, default=sel.min_sharpness, metavar="X",
                           help="variance of the Laplacian below which a frame is blurred (default %(default)s)")
    sel_group.add_argument("--relative-sharpness", type=float, default=sel.relative_sharpness, metavar="X",
                           help="a frame below this share of the median sharpness of its source's earlier "
                           "frames is blurred too (default %(default)s)")
    sel_group.add_argument("--min-change", type=float, default=sel.min_change, metavar="X",
                           help="mean grey change from the last kept frame below which a frame is a "
                           "near-duplicate (0-255; default %(default)s)")
    sel_group.add_argument("--max-dark-share", type=float, default=sel.max_dark_share, metavar="X")
    sel_group.add_argument("--max-bright-share", type=float, default=sel.max_bright_share, metavar="X")
    topics = p.add_argument_group("topics (as spatialvlm_annotate)")
    topics.add_argument("--image-topic", default=None)
    topics.add_argument("--depth-topic", default=None, help="'' for none (depth from the depth model)")
    topics.add_argument("--camera-info-topic", default=None, help="'' for none")
    run = p.add_argument_group("how")
    run.add_argument("--every", type=int, default=1, metavar="K", help="look at every K-th frame")
    run.add_argument("--batch-size", type=int, default=8, metavar="N", help="frames per model call")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--image-format", choices=("png", "jpeg"), default="png")
    run.add_argument("--force", action="store_true", help="redo the sources named (discard their rows)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("-v", "--verbose", action="store_true")
    model = p.add_argument_group("model (the geometric backend's model.* parameters)")
    for spec in _MODEL_SPECS:
        flags = (f"--{spec.name}", "--hfov-deg") if spec.name == "model.fallback_hfov_deg" else ()
        add_spec(model, spec, *flags)
    add_ray_options(p, "frame batches (measured on the actors)")
    return p


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    from spatialvlm_ros.spatial.vqa.engine import SynthesizeSettings
    from spatialvlm_ros.spatial.vqa.selection import SelectionSettings
    from spatialvlm_ros.spatial.vqa.templates import TemplateSettings

    values = vars(args)
    check_ray_options(parser, args)
    for spec in _MODEL_SPECS:
        reason = spec.validate(values[spec.name])
        if reason:
            parser.error(reason)
    model = {spec.name: values[spec.name] for spec in _MODEL_SPECS}
    model["model.backend"] = "geometric"
    try:
        return SynthesizeSettings(
            objects=tuple(" ".join(o.split()) for o in args.objects if o.strip()),
            use_target_object=not args.no_target_object,
            templates=TemplateSettings(args.position_margin, args.size_margin, args.min_quantity,
                                       qualitative_share=args.qualitative_share,
                                       questions_per_frame=args.questions_per_frame, kinds=args.kinds),
            selection=SelectionSettings(args.min_sharpness, args.relative_sharpness, args.max_dark_share,
                                        args.max_bright_share, args.min_change),
            image_topic=args.image_topic, depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic,
            every=args.every, batch_size=args.batch_size, seed=args.seed, image_format=args.image_format,
            model=model, force=args.force, progress=not args.no_progress and sys.stderr.isatty())
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None, estimator_factory: Any = None) -> int:
    """``estimator_factory`` replaces the configured geometric backend (tests and the bench inject a
    detector stand-in through it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    command = "spatialvlm_synthesize " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    with command_session("spatialvlm_synthesize", args.verbose):
        return _run(args, settings, estimator_factory, command)


def _run(args: argparse.Namespace, settings: Any, estimator_factory: Any, command: str) -> int:
    import dataclasses

    from spatialvlm_ros.spatial.episode_frames import EpisodeFailure
    from spatialvlm_ros.spatial.estimator import ModelConfig, ModelLoadError, build_estimator
    from spatialvlm_ros.spatial.vqa.engine import Synthesizer
    from spatialvlm_ros.spatial.vqa.sources import find_sources

    prog = "spatialvlm_synthesize"
    try:
        sources = find_sources(args.sources)
    except EpisodeFailure as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = ModelConfig.from_params(settings.model)
    if args.ray is not None:
        if estimator_factory is not None:
            raise ValueError("--ray builds the configured backend on each actor; no estimator_factory with it")
        try:
            batch_size, estimator_factory = ray_estimator_factory(prog, args, config)
        except ModelLoadError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_MODEL
        settings = dataclasses.replace(settings, batch_size=batch_size)
    elif estimator_factory is None:
        def estimator_factory() -> Any:
            return build_estimator(config)

    try:
        synth = Synthesizer(args.output, settings, estimator_factory)
    except OSError as exc:
        print(f"{prog}: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    card: list[Path] = []

    def close() -> None:
        try:
            synth.close()
        finally:
            card.append(synth.write_card(command))

    code, _ = run_sources(prog, sources, synth.run, close, "source",
                          "finished batches are saved")
    if code in (EXIT_OK, EXIT_FAILED):
        print(f"dataset: {args.output} (card: {card[0]})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

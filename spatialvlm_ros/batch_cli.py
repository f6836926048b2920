"""What the batch commands (``spatialvlm_annotate``, ``spatialvlm_synthesize``) share, so that they behave
alike: exit codes, options generated from the nodes' parameter specs, the ``--ray`` options, logging,
SIGTERM, and the loop over sources that goes on past a broken source.

Exit status: 0 all sources done, 1 some failed (named at the end), 2 bad arguments, 3 a model could not be
loaded, 130 / 143 interrupted by SIGINT / SIGTERM (re-running the same command continues).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from spatialvlm_ros.params import ParamSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_MODEL", "EXIT_OK", "EXIT_TERMINATED", "EXIT_USAGE",
    "Terminated", "add_ray_options", "add_spec", "check_ray_options", "command_session", "parse_bool",
    "ray_estimator_factory", "run_sources",
]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_spec(parser: argparse._ActionsContainer, spec: ParamSpec, *flags: str) -> None:
    """An option for one parameter: its type, choices, default and description from the spec."""
    kind = spec.type_name
    extra: dict[str, Any] = {}
    if kind == "bool":
        extra = {"type": parse_bool, "nargs": "?", "const": True, "metavar": "true|false"}
    elif kind == "int":
        extra = {"type": int, "metavar": "N"}
    elif kind == "double":
        extra = {"type": float, "metavar": "X"}
    else:
        extra = {"metavar": "TEXT"}
    if spec.choices:
        extra = {"choices": spec.choices}
    valid = spec.range_text().replace("\\|", "|")
    unit = f" [{spec.unit}]" if spec.unit else ""
    help_text = (spec.description.replace("%", "%%") + unit + " (default: %(default)r"
                 + (f"; {valid}" if valid and not spec.choices else "") + ")")
    parser.add_argument(*(flags or (f"--{spec.name}",)), dest=spec.name, default=spec.default,
                        help=help_text, **extra)


# ---------------------------------------------------------------------------------------------- Ray
def add_ray_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """--ray, --ray-actors, --ray-gpus-per-actor; ``unit`` names what is spread ("frame batches")."""
    fleet = parser.add_argument_group("a Ray cluster (one model copy per actor; put --ray after the sources)")
    fleet.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help=f"spread {unit} over Ray actors: ADDRESS is 'local' (the default: a "
                       "private instance on this machine), 'auto' (the cluster this machine is in), "
                       "'ray://head:10001' or 'head:6379'")
    fleet.add_argument("--ray-actors", type=int, default=None, metavar="N",
                       help="model copies (default: one per GPU in the cluster, or one per CPU without GPUs)")
    fleet.add_argument("--ray-gpus-per-actor", type=float, default=None, metavar="X",
                       help="GPUs each actor reserves (default: 1 when the cluster has GPUs and the model "
                       "runs in the actor, else 0)")


def check_ray_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.ray_actors is not None and args.ray_actors < 1:
        parser.error("--ray-actors must be at least 1")
    if args.ray_gpus_per_actor is not None and args.ray_gpus_per_actor < 0:
        parser.error("--ray-gpus-per-actor must not be negative")
    if args.ray is None and (args.ray_actors is not None or args.ray_gpus_per_actor is not None):
        parser.error("--ray-actors and --ray-gpus-per-actor need --ray")


def ray_estimator_factory(prog: str, args: argparse.Namespace, model_config: Any) -> tuple[int, Callable[[], Any]]:
    """(the command's batch size, the estimator factory) for --ray: each batch the command hands over is
    --batch-size frames per actor, so every model copy works on a batch of the usual size. Joins the
    cluster now (ModelLoadError when it cannot); the actors load their models when the factory is called."""
    from spatialvlm_ros.spatial.fleet import RayEstimator, connect, default_actors

    resources = connect(args.ray)
    actors, gpus = default_actors(resources, model_config)
    actors = args.ray_actors or actors
    gpus = gpus if args.ray_gpus_per_actor is None else args.ray_gpus_per_actor
    print(f"{prog}: Ray cluster at {args.ray}: {resources.get('CPU', 0):g} CPUs, "
          f"{resources.get('GPU', 0):g} GPUs; {actors} actor(s) with {gpus:g} GPU(s) each", file=sys.stderr)
    return args.batch_size * actors, lambda: RayEstimator(model_config, actors, args.batch_size, gpus)


# ------------------------------------------------------------------------------------------ running
class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so that open work is saved on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def command_session(prog: str, verbose: bool) -> Iterator[None]:
    """Our own log lines (on stderr, beside the progress bar; libraries keep their defaults), and SIGTERM
    (a batch scheduler, `kill`) stopping like Ctrl-C, for the length of one command."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"[{prog}] %(levelname)s %(message)s"))
    package_log = logging.getLogger("spatialvlm_ros")
    package_log.addHandler(handler)
    level = package_log.level
    package_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        package_log.removeHandler(handler)
        package_log.setLevel(level)


def run_sources(prog: str, sources: Sequence[Any], run_one: Callable[[Any], Any], close: Callable[[], None],
                noun: str, saved: str) -> tuple[int, list[str]]:
    """Run ``run_one`` on each source (an episode, an image folder) and print its ``summary()``.

    A source that fails (EpisodeFailure, or any error of its own) is named and the others go on; a model
    that cannot load stops the command (exit 3); SIGINT/SIGTERM stop it after ``saved`` work is kept.
    ``close`` runs on every way out. Returns (exit status, names of the failed sources); the caller
    prints what comes after a finished run.
    """
    from spatialvlm_ros.spatial.episode_frames import EpisodeFailure
    from spatialvlm_ros.spatial.estimator import ModelLoadError

    failed: list[str] = []
    try:
        for path in sources:
            try:
                result = run_one(path)
            except EpisodeFailure as exc:
                failed.append(path.name)
                print(f"{path.name}: FAILED: {exc}", flush=True)
                continue
            except ModelLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken source must not stop the others
                logging.getLogger(f"spatialvlm_ros.{prog}").debug("%s %s failed", noun, path, exc_info=True)
                failed.append(path.name)
                print(f"{path.name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(result.summary(), flush=True)
    except ModelLoadError as exc:
        print(f"{prog}: the model could not be loaded: {exc}", file=sys.stderr)
        return EXIT_MODEL, failed
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"{prog}: interrupted; {saved}: run the same command again to continue", file=sys.stderr)
        return (EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED), failed
    finally:
        close()
    if failed:
        print(f"{prog}: {len(failed)} of {len(sources)} {noun}(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED, failed
    return EXIT_OK, failed

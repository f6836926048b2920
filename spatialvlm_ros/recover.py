"""spatialvlm_recover: rebuild episodes that a killed recorder (SIGKILL, OOM killer, power cut) left unreadable.

Reads each cut-off bag up to the cut with the mcap library's StreamReader, writes a new bag with rosbags'
writer and rewrites episode.yaml (finalized: false, recovered: true, the counts recovered). Episodes that
are finalized, already recovered, or still being recorded are left alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatialvlm_recover", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="episode directories, or folders of them "
                        "(e.g. the recorder's output_dir)")
    parser.add_argument("--keep-original", action="store_true",
                        help="keep the cut-off file as <name>.mcap.unrecovered beside the rebuilt bag")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the named episode directories even if their bag opens")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spatialvlm_ros.spatial.recovery import find_unfinalized, recover_episode

    logging.basicConfig(level=logging.WARNING, format="[spatialvlm_recover] %(levelname)s %(message)s")
    failed = 0
    found = 0
    for path in args.paths:
        if not path.exists():
            print(f"spatialvlm_recover: {path} does not exist", file=sys.stderr)
            failed += 1
            continue
        episodes = [path] if args.force and (path / "episode.yaml").is_file() else find_unfinalized(path)
        for episode in episodes:
            found += 1
            result = recover_episode(episode, keep_original=args.keep_original, force=args.force)
            print(result.summary(), flush=True)
            failed += result.status in ("failed", "in use")
    if not found and not failed:
        print("spatialvlm_recover: no unfinalized episode found (nothing to do)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Regenerates config/<node>.yaml and the README parameter tables from spatialvlm_ros/params.py.

params.py is the one source of truth; run this after changing it (test_params_docs fails until you do).
  python scripts/gen_params_docs.py          # rewrite the files
  python scripts/gen_params_docs.py --check  # exit 1 if anything is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spatialvlm_ros.params import ALL_PARAM_SETS, ParamSet  # noqa: E402

CONFIG_FILES = {"spatialvlm_reward": "reward.yaml", "spatialvlm_recorder": "recorder.yaml",
                "spatialvlm_affordance": "affordance.yaml"}


def _yaml_scalar(value) -> str:
    # JSON scalars are valid YAML and quote strings safely.
    return json.dumps(value)


def render_yaml(param_set: ParamSet) -> str:
    lines = [f"# Parameters of {param_set.node_name}, generated from spatialvlm_ros/params.py by",
             "# scripts/gen_params_docs.py: edit params.py, not this file's defaults. Copy this file to",
             "# change values for your robot and pass it to the launch file (config:=/path/to.yaml).",
             f"{param_set.node_name}:", "  ros__parameters:"]
    # Group dotted names into a tree first, so a group's parameters stay under one key even when
    # params.py does not declare them next to each other (YAML would silently keep the last key).
    tree: dict = {}
    for spec in param_set.specs:
        *groups, leaf = spec.name.split(".")
        node = tree
        for g in groups:
            node = node.setdefault(g, {})
        node[leaf] = spec

    def emit(node: dict, depth: int) -> None:
        indent = "    " + "  " * depth
        for key, value in node.items():
            if isinstance(value, dict):
                lines.append(f"{indent}{key}:")
                emit(value, depth + 1)
                continue
            unit = f" [{value.unit}]" if value.unit else ""
            valid = f" ({value.range_text().replace(chr(92), '')})" if value.range_text() else ""
            lines.append(f"{indent}# {value.description}{unit}{valid}")
            lines.append(f"{indent}{key}: {_yaml_scalar(value.default)}")

    emit(tree, 0)
    return "\n".join(lines) + "\n"


def render_readme(text: str, param_set: ParamSet) -> str:
    begin, end = f"<!-- params:{param_set.node_name} -->", f"<!-- /params:{param_set.node_name} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return text
    return pattern.sub(lambda _: f"{begin}\n{param_set.markdown_table()}\n{end}", text)


def targets() -> dict[Path, str]:
    out: dict[Path, str] = {}
    readme = ROOT / "README.md"
    text = readme.read_text() if readme.exists() else ""
    for ps in ALL_PARAM_SETS:
        out[ROOT / "config" / CONFIG_FILES[ps.node_name]] = render_yaml(ps)
        text = render_readme(text, ps)
    if readme.exists():
        out[readme] = text
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, content in targets().items():
        if not path.exists() or path.read_text() != content:
            stale.append(path)
            if not args.check:
                path.write_text(content)
    if args.check and stale:
        print("out of date (run scripts/gen_params_docs.py): " + ", ".join(str(p) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoints shipped inside the package.

``tiny_spatial_qwen``: a ~2.4M-parameter Qwen2.5-VL-architecture model trained from scratch on the
package's synthetic tabletop scenes (``spatialvlm_train``). It answers metric questions about *those*
scenes (a gripper and coloured cubes and cylinders on a table, seen by the demo camera) and nothing
else: it is a model of that synthetic domain, not of real camera images. The demo, the benchmarks and
the tests use it; the nodes' default stays a real VLM.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUILTIN_ALIASES", "resolve_model_name", "shipped_model_path"]

_HERE = Path(__file__).resolve().parent
BUILTIN_ALIASES = {"builtin:tiny-spatial": "tiny_spatial_qwen"}


def shipped_model_path(name: str = "tiny_spatial_qwen") -> Path:
    """Directory of a shipped checkpoint (loadable with from_pretrained / model.name_or_path)."""
    path = _HERE / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped model {name!r} is missing at {path}: the package was installed without its "
            "package data, or the checkpoint was not trained yet (see README: spatialvlm_train)")
    return path


def resolve_model_name(name_or_path: str) -> str:
    """``builtin:...`` aliases -> the shipped checkpoint's directory; anything else unchanged."""
    key = name_or_path.strip()
    if key in BUILTIN_ALIASES:
        return str(shipped_model_path(BUILTIN_ALIASES[key]))
    if key.startswith("builtin:"):
        raise ValueError(f"unknown built-in model {key!r}; accepted: {', '.join(BUILTIN_ALIASES)}")
    return name_or_path

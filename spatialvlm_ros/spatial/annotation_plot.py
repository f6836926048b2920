"""reward.png: an annotated episode's distances and rewards over time (matplotlib, off-screen)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

__all__ = ["plot_annotations"]




def plot_annotations(table: pa.Table, path: Path, title: str, subtitle: str = "") -> None:
    """reward.png: distance (top) and each mode's reward (below) against time since the first frame.

    Frames without a distance break the lines and are marked with red ticks along the bottom of the
    distance plot, so a gap reads as "the model gave no number", never as a value.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    stamps = np.asarray(table.column("stamp_ns").to_pylist(), dtype=np.int64)
    t = (stamps - stamps.min()) / 1e9 if len(stamps) else np.zeros(0)
    d = np.array([np.nan if v is None else v for v in table.column("distance_m").to_pylist()], float)
    modes = [n[len("reward_"):] for n in table.column_names if n.startswith("reward_")]
    fig, axes = plt.subplots(1 + len(modes), 1, sharex=True, squeeze=False,
                             figsize=(10, 2.6 + 2.0 * len(modes)))
    ax = axes[0][0]
    missing = np.isnan(d)
    ax.plot(t, d, "-o", color="tab:blue", markersize=3, linewidth=1.2,
            label=f"distance_m ({int((~missing).sum())} frames)")
    if missing.any():
        finite = d[~missing]
        low = float(finite.min()) if finite.size else 0.0
        ax.plot(t[missing], np.full(int(missing.sum()), low), "|", color="tab:red", markersize=12,
                label=f"no distance ({int(missing.sum())} frames)")
    ax.set_ylabel("distance (m)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    for row, mode in enumerate(modes, start=1):
        r = np.array([np.nan if v is None else v for v in table.column(f"reward_{mode}").to_pylist()],
                     float)
        ax = axes[row][0]
        ax.plot(t, r, "-o", color="tab:green", markersize=3, linewidth=1.2)
        ax.set_ylabel(f"reward\n{mode}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("time since the first frame (s)")
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)

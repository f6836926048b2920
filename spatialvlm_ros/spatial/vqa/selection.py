"""Frame selection for the data engine: skip blurred, over/under-exposed and near-duplicate frames.

Episodes recorded at 30 Hz are mostly near-copies of their neighbours; a question set built from every
frame would repeat itself and over-weight the moments the robot stood still. Each check is cheap
(OpenCV on a small grey copy) and every rejection is counted by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["FrameSelector", "SelectionSettings", "REJECT_REASONS", "frame_stats"]

REJECT_REASONS = ("blurred", "underexposed", "overexposed", "duplicate")
# Near-duplicates are judged on a small grey thumbnail: fast, and blind to sensor noise.
THUMB_SIZE = (64, 48)


@dataclass(frozen=True)
class SelectionSettings:
    """Thresholds; each check is off at 0 (blur, duplicates) or at its extreme (exposure)."""

    min_sharpness: float = 10.0  # variance of the Laplacian of the grey image, below: blurred
    # ... or below this share of the median sharpness of the source's earlier frames (motion blur: a
    # scene's own sharpness depends on its texture, so the absolute bar alone is either too low or too high)
    relative_sharpness: float = 0.5
    max_dark_share: float = 0.6  # share of pixels at or below 10 of 255, above: underexposed
    max_bright_share: float = 0.6  # share of pixels at or above 245 of 255, above: overexposed
    min_change: float = 1.5  # mean absolute grey change (0-255) on a 64x48 thumbnail from the last kept frame

    def __post_init__(self) -> None:
        if self.min_sharpness < 0 or self.min_change < 0 or not 0 <= self.relative_sharpness < 1:
            raise ValueError("min_sharpness and min_change must not be negative, relative_sharpness must be "
                             "within [0, 1)")
        for name in ("max_dark_share", "max_bright_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def frame_stats(rgb: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(sharpness, dark share, bright share, thumbnail) of an (H, W, 3) uint8 RGB image."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    dark = float(np.mean(grey <= 10))
    bright = float(np.mean(grey >= 245))
    thumb = cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    return sharpness, dark, bright, thumb


@dataclass
class FrameSelector:
    """Decides frame by frame, in order, within one source (an episode or an image folder)."""

    settings: SelectionSettings = field(default_factory=SelectionSettings)
    counts: Counter = field(default_factory=Counter)
    _last_kept: np.ndarray | None = None
    _sharpness: list[float] = field(default_factory=list)

    def check(self, rgb: np.ndarray) -> str | None:
        """None to keep the frame, else the reason it is skipped (one of REJECT_REASONS)."""
        s = self.settings
        sharpness, dark, bright, thumb = frame_stats(rgb)
        reason = None
        if dark > s.max_dark_share:
            reason = "underexposed"
        elif bright > s.max_bright_share:
            reason = "overexposed"
        elif sharpness < s.min_sharpness or (len(self._sharpness) >= 5 and sharpness < s.relative_sharpness
                                             * float(np.median(self._sharpness))):
            reason = "blurred"
        elif (self._last_kept is not None and s.min_change > 0
              and float(np.mean(np.abs(thumb - self._last_kept))) < s.min_change):
            reason = "duplicate"
        if reason not in ("underexposed", "overexposed"):
            self._sharpness.append(sharpness)
        if reason is None:
            self._last_kept = thumb
            self.counts["kept"] += 1
        else:
            self.counts[reason] += 1
        return reason

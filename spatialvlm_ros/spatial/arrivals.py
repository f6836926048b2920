"""Are camera frames getting through? Compares how many frames arrive with how many the camera's own
header stamps say it sent, so a node can say "frames are lost in transport" instead of going quiet.

Frames the model is too busy for are dropped after they arrive and do not count here: this is about
the middleware (large best-effort frames over UDP without the package's Fast DDS profile lose most of
them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

# Judged over this many recent arrivals; fewer than MIN_FRAMES say nothing.
WINDOW = 60
MIN_FRAMES = 10
# Reported as a problem when more than this share of the camera's frames never arrived.
LOST_SHARE_WARN = 0.3


@dataclass(frozen=True)
class ArrivalReport:
    received: int  # frames in the window
    arrival_hz: float | None  # frames arriving per second (by this node's clock)
    camera_hz: float | None  # the camera's rate, from the spacing of its header stamps
    lost_share: float | None  # share of the camera's frames in the window that never arrived
    problem: str | None  # a sentence for logs and diagnostics, None when all is well


class ArrivalMonitor:
    """Feed it each frame's header stamp and arrival time; ``report()`` says what is getting lost.

    The camera's period is the 10th percentile of the positive gaps between consecutive stamps: frames
    that went missing only make gaps longer, so the short ones are the camera's own. A stamp that goes
    backwards (a bag looped, the camera restarted) starts the window again.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._stamps: deque[float] = deque(maxlen=window)
        self._arrivals: deque[float] = deque(maxlen=window)

    def add(self, stamp_s: float, arrival_s: float) -> None:
        if self._stamps and stamp_s < self._stamps[-1]:
            self._stamps.clear()
            self._arrivals.clear()
        self._stamps.append(stamp_s)
        self._arrivals.append(arrival_s)

    def report(self, now_s: float | None = None) -> ArrivalReport:
        n = len(self._stamps)
        if n < MIN_FRAMES:
            return ArrivalReport(n, None, None, None, None)
        arrivals = np.asarray(self._arrivals)
        span = float(arrivals[-1] - arrivals[0])
        arrival_hz = (n - 1) / span if span > 0 else None
        gaps = np.diff(np.asarray(self._stamps))
        gaps = gaps[gaps > 0]
        if len(gaps) < MIN_FRAMES // 2:
            return ArrivalReport(n, arrival_hz, None, None, None)  # stamps not set (all zero) or repeated
        period = float(np.percentile(gaps, 10))
        stamp_span = self._stamps[-1] - self._stamps[0]
        expected = stamp_span / period + 1
        lost_share = max(0.0, 1.0 - n / expected)
        camera_hz = 1.0 / period
        problem = None
        if lost_share > LOST_SHARE_WARN:
            problem = (f"{lost_share:.0%} of the camera's frames never arrived (its stamps say about "
                       f"{camera_hz:.1f} Hz, {arrival_hz or 0:.1f} Hz arrive): frames are being lost in "
                       "transport. Large best-effort frames need the package's Fast DDS profile in EVERY "
                       "process, the camera's included (README, 'Camera-sized messages and DDS'), or a "
                       "reliable camera publisher")
        return ArrivalReport(n, arrival_hz, camera_hz, lost_share, problem)

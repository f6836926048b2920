"""Which depth image and camera_info belong to a colour frame: matched by header stamp, with an age limit.

ROS-free, and the one rule both the live nodes (``camera_input.py``) and the offline readers of episodes
(``episode_frames.py``: the annotator and the data engine) apply, so that a frame gets the same depth
live and offline:

* A depth image (or camera_info) belongs to a colour frame when its header stamp is within
  ``slop_s`` of the frame's stamp; of several, the nearest stamp wins. Arrival order does not matter.
* It must also have *arrived* within ``max_age_s`` of the colour frame (before or after, by the
  receiver's clock): a stream whose messages arrive long after their stamps (a late, backed-up
  stream) or one replayed with old stamps is not trusted, however its stamps look.
* A message with a zero stamp (unstamped) is placed at its arrival time.
* Nothing that does not match is used: the frame goes on without depth (or intrinsics), and the
  reason says why (stalled stream, no stamp within the slop, arrived too late).
* ``camera_info_static`` declares the calibration fixed (a driver that publishes camera_info once,
  latched, or never restamps it): then the newest camera_info is used whatever its stamp.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

NS = 1_000_000_000


@dataclass(frozen=True)
class SyncPolicy:
    """How close (stamp) and how fresh (arrival) a depth or camera_info must be to join a frame."""

    slop_s: float = 0.02
    max_age_s: float = 0.5
    camera_info_static: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.slop_s <= 10.0:
            raise ValueError(f"sync.slop_s must be within [0, 10] s, got {self.slop_s}")
        if not 0.0 < self.max_age_s <= 60.0:
            raise ValueError(f"sync.max_age_s must be within (0, 60] s, got {self.max_age_s}")

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> SyncPolicy:
        return cls(slop_s=float(values["sync.slop_s"]), max_age_s=float(values["sync.max_age_s"]),
                   camera_info_static=bool(values["sync.camera_info_static"]))

    @property
    def slop_ns(self) -> int:
        return int(round(self.slop_s * NS))

    @property
    def max_age_ns(self) -> int:
        return int(round(self.max_age_s * NS))


def effective_stamp_ns(header_stamp_ns: int, received_ns: int) -> int:
    """The header stamp, or the arrival time for an unstamped (zero) header."""
    return header_stamp_ns if header_stamp_ns else received_ns


@dataclass(frozen=True)
class Match(Generic[T]):
    """The matching message's value, or None and why not (None reason: the stream never published)."""

    value: T | None
    reason: str | None = None
    stamp_offset_s: float | None = None


def match_stamped(
    candidates: Any, stamp_ns: int, received_ns: int, policy: SyncPolicy, what: str = "depth",
) -> Match[Any]:
    """The candidate ``(stamp_ns, received_ns, value)`` that belongs to a frame, or why none does.

    ``candidates`` is any iterable of such triples (stamps already through ``effective_stamp_ns``),
    all from one stream; ``stamp_ns``/``received_ns`` are the colour frame's.
    """
    items = list(candidates)
    if not items:
        return Match(None)
    newest_received = max(r for _, r, _ in items)
    if received_ns - newest_received > policy.max_age_ns:
        return Match(None, (f"{what} stalled: the newest {what} arrived "
                            f"{(received_ns - newest_received) / NS:.2f} s before this frame "
                            f"(sync.max_age_s {policy.max_age_s:g}); {what} not used"))
    best = None
    for stamp, received, value in items:
        offset = abs(stamp - stamp_ns)
        if offset <= policy.slop_ns and (best is None or offset < best[0]):
            best = (offset, stamp, received, value)
    if best is None:
        nearest = min(abs(s - stamp_ns) for s, _, _ in items)
        return Match(None, (f"no {what} stamped within sync.slop_s ({policy.slop_s:g} s) of this "
                            f"frame (nearest stamp {nearest / NS:.3f} s away); {what} not used"))
    offset, _stamp, received, value = best
    lag = received - received_ns
    if abs(lag) > policy.max_age_ns:
        when = "after" if lag > 0 else "before"
        return Match(None, (f"the {what} stamped like this frame arrived {abs(lag) / NS:.2f} s "
                            f"{when} it (sync.max_age_s {policy.max_age_s:g}); {what} not used"))
    return Match(value, None, offset / NS)


def aligned_depth(decode: Callable[[], Any], rgb_shape: tuple[int, ...]) -> tuple[Any, str | None]:
    """The matched depth image in metres, or None and why: undecodable, or not the colour image's size."""
    try:
        depth_m = decode()
    except Exception as exc:  # noqa: BLE001 - ImageDecodeError or undecodable bytes: bad input, not a crash
        return None, f"bad depth image, ignored: {exc}"
    if depth_m.shape != tuple(rgb_shape[:2]):
        return None, (f"depth {depth_m.shape[1]}x{depth_m.shape[0]} is not aligned with image "
                      f"{rgb_shape[1]}x{rgb_shape[0]}; depth ignored")
    return depth_m, None


class StampedBuffer(Generic[T]):
    """The recent messages of one stream, for ``match_stamped`` (thread-safe, bounded).

    ``wait_match`` lets a live consumer wait, up to a deadline, for a message stamped like its
    frame that has not arrived yet, but only while the stream is alive: a stalled stream costs
    no waiting.
    """

    def __init__(self, maxlen: int = 64) -> None:
        self._items: deque[tuple[int, int, T]] = deque(maxlen=maxlen)
        self._cond = threading.Condition()

    def add(self, stamp_ns: int, received_ns: int, value: T) -> None:
        with self._cond:
            self._items.append((effective_stamp_ns(stamp_ns, received_ns), received_ns, value))
            self._cond.notify_all()

    def newest(self) -> T | None:
        with self._cond:
            return self._items[-1][2] if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def match(self, stamp_ns: int, received_ns: int, policy: SyncPolicy, what: str = "depth") -> Match[T]:
        with self._cond:
            items = list(self._items)
        return match_stamped(items, effective_stamp_ns(stamp_ns, received_ns), received_ns, policy, what)

    def wait_match(self, stamp_ns: int, received_ns: int, policy: SyncPolicy, what: str,
                   now_ns: Any, timeout_s: float) -> Match[T]:
        """``match``, waiting up to ``timeout_s`` for a matching message while the stream is alive.

        ``now_ns()`` reads the same clock as ``received_ns``. A stream that has never published,
        whose newest message is older than ``max_age_s``, or whose newest stamp is already past the
        frame's (messages of one stream arrive in order) is not waited for.
        """
        import time

        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            result = self.match(stamp_ns, received_ns, policy, what)
            if result.value is not None or result.reason is None:
                return result
            with self._cond:
                newest_stamp, newest_received, _ = self._items[-1] if self._items else (0, 0, None)
                alive = bool(self._items) and now_ns() - newest_received <= policy.max_age_ns
                passed = newest_stamp > effective_stamp_ns(stamp_ns, received_ns) + policy.slop_ns
                remaining = deadline - time.monotonic()
                if not alive or passed or remaining <= 0:
                    return result
                # A match can only appear with a new message: wait for one (or the deadline).
                self._cond.wait(min(remaining, 0.05))

"""Every-frame hand-off for simulators that step synchronously: a bounded first-in-first-out queue.

The counterpart of ``latest.LatestSlot`` (newest frame wins, for real cameras): here every frame is
handled, in order, until ``capacity`` frames wait; a frame that would exceed it is refused (returned to
the caller and counted), never queued without bound. ``make_handoff`` picks one by the node's
``frame_policy``.
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

from spatialvlm_ros.spatial.latest import Handoff, LatestSlot

T = TypeVar("T")

FRAME_POLICIES = ("newest", "every")


class FrameFifo(Handoff[T]):
    """A bounded FIFO with LatestSlot's interface: put() refuses when full, take() blocks until an
    item or close()."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the queue needs a capacity of at least 1, got {capacity}")
        super().__init__()
        self.capacity = capacity
        self._items: deque[T] = deque()  # dropped counts items refused because the queue was full

    def put(self, item: T) -> T | None:
        """Queue ``item``; returns it back (refused, never to be handled) when the queue is full, else None."""
        with self._cond:
            if len(self._items) >= self.capacity:
                self.dropped += 1
                return item
            self._items.append(item)
            self.accepted += 1
            self._cond.notify()
            return None

    def take(self, timeout: float | None = None) -> T | None:
        """The oldest item, or None on close()/timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout):
                return None
            return self._items.popleft() if self._items else None

    def peek(self) -> T | None:
        with self._cond:
            return self._items[0] if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def drain(self) -> list[T]:
        """Remove and return everything that waits, oldest first."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items


def make_handoff(policy: str, capacity: int) -> Handoff:
    """``newest``: a LatestSlot (``capacity`` unused); ``every``: a FrameFifo of ``capacity`` frames."""
    if policy == "newest":
        return LatestSlot()
    if policy == "every":
        return FrameFifo(capacity)
    raise ValueError(f"frame_policy={policy!r} is not accepted; accepted: {', '.join(FRAME_POLICIES)}")

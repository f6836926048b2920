"""Newest-frame-wins hand-off from a subscription callback to a worker thread.

The camera callback only drops the frame into a one-item slot (replacing, and counting, any frame the
worker has not taken yet); the worker runs the slow model on the newest frame. Latency therefore stays
bounded by one model call however fast the camera is, and nothing queues up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """What the Worker needs of a hand-off: take() until close(); ``dropped`` counts items never handled."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.accepted = 0

    def put(self, item: T) -> T | None:
        """Hand ``item`` over; returns an item that will never be handled (for its caller to answer), or None."""
        raise NotImplementedError

    def take(self, timeout: float | None = None) -> T | None:
        raise NotImplementedError

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class LatestSlot(Handoff[T]):
    """A one-item mailbox: put() replaces, take() blocks until an item or close()."""

    def __init__(self) -> None:
        super().__init__()
        self._item: T | None = None  # dropped counts items replaced before the worker took them

    def put(self, item: T) -> T | None:
        """Keep ``item``; returns the item it replaced (never to be handled), or None."""
        with self._cond:
            replaced = self._item
            if replaced is not None:
                self.dropped += 1
            self._item = item
            self.accepted += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, or None on close()/timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                return None
            item, self._item = self._item, None
            return item

    def peek(self) -> T | None:
        with self._cond:
            return self._item

    def drain(self) -> list[T]:
        """Remove and return what waits (after close(): the items that will never be handled)."""
        with self._cond:
            item, self._item = self._item, None
            return [] if item is None else [item]


class Worker(Generic[T]):
    """A daemon thread that feeds each item taken from a LatestSlot (or a FrameFifo) to ``handle``.

    Exceptions from ``handle`` go to ``on_error(item, exc)`` with the item that failed, so its caller
    can still answer for it, and the loop goes on: one bad frame must not stop the node.
    """

    def __init__(self, slot: Handoff[T], handle: Callable[[T], None],
                 on_error: Callable[[T, BaseException], None], name: str = "spatialvlm-worker",
                 on_start: Callable[[], None] | None = None) -> None:
        self._on_start = on_start
        self._slot = slot
        self._handle = handle
        self._on_error = on_error
        self.busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while not self._slot.closed:
            item = self._slot.take(timeout=0.5)
            if item is None:
                continue
            self.busy.set()
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - reported, and the worker must survive
                self._on_error(item, exc)
            finally:
                self.busy.clear()

    def stop(self, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> bool:
        """Close the slot and wait for the item in progress; True when the thread has ended.

        ``on_wait`` is called once if that takes more than a second (a long model call), so the
        user knows why the node has not exited yet. Wait for the thread before freeing what it uses.
        """
        self._slot.close()
        if self._thread is threading.current_thread() or not self._thread.is_alive():
            return not self._thread.is_alive()
        first = 1.0 if timeout is None else min(1.0, timeout)
        self._thread.join(first)
        if self._thread.is_alive() and (timeout is None or timeout > first):
            if on_wait is not None:
                on_wait()
            self._thread.join(None if timeout is None else timeout - first)
        return not self._thread.is_alive()

"""Recorded episodes on disk: a rosbag2 bag (MCAP storage) plus ``episode.yaml``, and their reader.

ROS-free (no rclpy): the recorder node hands over serialized CDR bytes exactly as they arrived, a
writer thread puts them in the bag, and ``read_episode`` gives them back (tests, the annotator).

An episode directory is itself the bag (``metadata.yaml`` + ``<name>.mcap``, rosbag2 format version
8, which ``ros2 bag`` on Jazzy reads) with ``episode.yaml`` beside it. Decisions worth knowing:

* No accepted message is lost. ``put`` either queues a message (accepted) or refuses it and counts
  it in ``frames_dropped``. It refuses only when the bytes waiting for the disk would exceed
  ``max_queue_bytes`` (default 1 GiB: about 18 s of 640x480 rgb8 + 16UC1 depth at 30 Hz), i.e. when
  the disk has fallen behind for many seconds and memory would otherwise grow without bound.
* Disk errors (ENOSPC, EACCES, EIO, ...) stop the episode: the chunk being written is rolled back
  to the last complete one and the bag is finalized, so everything written before stays readable.
  A reserve file (``.space_reserve``, grown with the bag) holds the disk space the MCAP summary,
  metadata.yaml and episode.yaml need; it is deleted to make room when the disk fills.
* ``episode.yaml`` is written when the episode opens (``finalized: false``) and replaced atomically
  when it is finalized, so even a killed recorder leaves the task and target behind.
* A recorder killed mid-episode (SIGKILL, OOM killer, power cut) leaves a recoverable bag: at least
  every ``flush_period_s`` the messages written so far are closed into an MCAP chunk and fsync'ed, so
  at most that much (plus the one chunk being written) is lost; ``recovery.py`` rebuilds the bag. The
  episode directory's ``.recording.lock`` is held while it is written, so recovery never touches an
  episode that is still being recorded.
* Optional chunk compression (``compression``: lz4 or zstd, as rosbag2's MCAP presets) trades CPU on
  the writer thread for disk; every reader here (rosbags, mcap, Foxglove) decompresses both.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk
from rosbags.typesys import Stores, get_typestore

__all__ = [
    "EPISODE_FILE",
    "DEFAULT_MAX_QUEUE_BYTES",
    "EpisodeError",
    "EpisodeMessage",
    "EpisodeSummary",
    "EpisodeWriter",
    "TopicSpec",
    "check_writable",
    "default_typestore",
    "load_episode_info",
    "make_qos",
    "new_episode_dir",
    "read_episode",
    "unrecordable_reason",
]

EPISODE_FILE = "episode.yaml"
EPISODE_FORMAT = "spatialvlm_ros.episode/1"
BAG_VERSION = 8  # rosbag2 metadata version that ros2 bag on Jazzy reads
DEFAULT_MAX_QUEUE_BYTES = 1 << 30
RESERVE_FILE = ".space_reserve"
# Room for schemas, channels, metadata and episode.yaml, plus the summary's per-chunk index record
# (about 80 bytes plus 10 per channel; 256 leaves slack).
RESERVE_BASE_BYTES = 1 << 20
RESERVE_BYTES_PER_CHUNK = 256
DEFAULT_FLUSH_PERIOD_S = 1.0
COMPRESSIONS = ("none", "lz4", "zstd")

_log = logging.getLogger(__name__)
_typestore_lock = threading.Lock()
_typestore: Any = None


def default_typestore() -> Any:
    """rosbags' typestore for ROS 2 Jazzy (built once; it knows the standard message packages)."""
    global _typestore
    with _typestore_lock:
        if _typestore is None:
            _typestore = get_typestore(Stores.ROS2_JAZZY)
        return _typestore


def unrecordable_reason(msgtype: str, typestore: Any = None) -> str | None:
    """Why ``msgtype`` cannot be written with a message definition, or None when it can.

    The definition goes into the bag so that readers without ROS (rosbags, mcap-ros2-support,
    Foxglove) can decode it; a type the typestore does not know would be an undecodable topic.
    """
    store = typestore if typestore is not None else default_typestore()
    if msgtype not in store.fielddefs:
        return (f"type {msgtype} is not known to rosbags' typestore, so its message definition "
                "cannot be stored in the bag")
    try:
        store.generate_msgdef(msgtype, ros_version=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not recordable", with the reason
        return f"type {msgtype}: message definition cannot be generated ({exc})"
    return None


def make_qos(
    reliability: int,
    durability: int,
    history: int = QosHistory.KEEP_LAST.value,
    depth: int = 10,
    deadline_ns: int = 0,
    lifespan_ns: int = 0,
    liveliness: int = QosLiveliness.AUTOMATIC.value,
    liveliness_lease_duration_ns: int = 0,
) -> Qos:
    """A publisher's offered QoS as rosbag2 stores it (values are the rmw enum values)."""

    def _time(ns: int) -> QosTime:
        sec, nsec = divmod(max(0, int(ns)), 1_000_000_000)
        return QosTime(sec, nsec)

    return Qos(
        history=QosHistory(history),
        depth=int(depth),
        reliability=QosReliability(reliability),
        durability=QosDurability(durability),
        deadline=_time(deadline_ns),
        lifespan=_time(lifespan_ns),
        liveliness=QosLiveliness(liveliness),
        liveliness_lease_duration=_time(liveliness_lease_duration_ns),
        avoid_ros_namespace_conventions=False,
    )


@dataclass(frozen=True)
class TopicSpec:
    """A topic to record: its resolved name, ROS type name and the QoS its publishers offer."""

    name: str
    msgtype: str
    offered_qos: tuple[Qos, ...] = ()


class EpisodeError(RuntimeError):
    """An episode cannot be started; the text says why (and what to do)."""


class EpisodeMessage(NamedTuple):
    """One recorded message: bag timestamp is the receive time in nanoseconds."""

    topic: str
    msgtype: str
    timestamp: int
    rawdata: bytes


@dataclass
class EpisodeSummary:
    """What ``finalize`` reports; the same figures are in episode.yaml."""

    directory: Path
    stop_reason: str
    error: str | None
    message_counts: dict[str, int]
    frames_dropped: int
    messages_not_written: int
    bag_readable: bool

    @property
    def message_count(self) -> int:
        return sum(self.message_counts.values())


def new_episode_dir(output_dir: Path | str, now: datetime | None = None) -> Path:
    """A fresh directory name under ``output_dir``: episode_YYYYmmdd_HHMMSS_micro (local time)."""
    now = now or datetime.now()
    base = Path(output_dir).expanduser() / now.strftime("episode_%Y%m%d_%H%M%S_%f")
    path, n = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}_{n}")
        n += 1
    return path


def check_writable(output_dir: Path | str) -> str | None:
    """Why episodes cannot be created under ``output_dir`` (created if missing), or None."""
    path = Path(output_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"output_dir {path} is not writable: {exc.strerror or exc}"
    if not path.is_dir():
        return f"output_dir {path} is not a directory"
    probe = path / f".write_probe_{os.getpid()}_{threading.get_ident()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
    except OSError as exc:
        return f"output_dir {path} is not writable: {exc.strerror or exc}"
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return None


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).astimezone().isoformat()


# ---------------------------------------------------------------------------------------------
# Bag writing with roll-back: rosbags' MCAP writer, taught to drop a chunk it could not write.


class _RollbackMcapWriter(McapWriter):
    """McapWriter that, when writing a chunk fails, truncates the file to the last whole chunk.

    After a failure the file ends with complete records only, the statistics count only what is
    in the file, and ``close()`` can still append a valid summary and footer.
    """

    # rosbags internals this relies on (checked with rosbags 0.11); without them: no roll-back.
    _INTERNALS = ("bio", "chunk", "chunks", "channel_stats", "message_start_time",
                  "message_end_time", "path")

    def __init__(self, path: Path, compression: Any) -> None:
        super().__init__(path, compression)
        self.can_roll_back = all(hasattr(self, name) for name in self._INTERNALS)
        if not self.can_roll_back:
            _log.warning("this rosbags version's MCAP writer differs from 0.11: a disk error "
                         "mid-episode may leave the bag unreadable")
            return
        self.bio.flush()
        self.good_offset = self.bio.tell()
        self.good_start = self.message_start_time
        self.good_end = self.message_end_time

    def set_chunk_compression(self, name: str) -> None:
        """lz4 or zstd chunks (rosbags itself offers zstd only, at its own level); before any chunk."""
        if name == "lz4":
            import lz4.frame

            self.compression, self.compressor = "lz4", lz4.frame.compress
        elif name == "zstd":
            import zstandard

            # level 1: rosbag2's zstd_fast preset favours speed; a robot records at camera rate
            self.compression, self.compressor = "zstd", zstandard.ZstdCompressor(level=1).compress
        elif name != "none":
            raise ValueError(f"compression {name!r} is not accepted; accepted: {', '.join(COMPRESSIONS)}")

    def sync(self) -> None:
        """Close the pending chunk (if any) and push the file to the disk (fsync)."""
        if self.chunk.msgs:
            self.close_chunk()
        self.bio.flush()
        os.fsync(self.bio.fileno())

    def close_chunk(self) -> None:
        if not self.can_roll_back:
            super().close_chunk()
            return
        pending, n_chunks = self.chunk, len(self.chunks)
        try:
            super().close_chunk()
            self.bio.flush()
        except OSError:
            self._roll_back(pending, n_chunks)
            raise
        self.good_offset = self.bio.tell()
        self.good_start = min(self.good_start, pending.message_start_time)
        self.good_end = max(self.good_end, pending.message_end_time)

    def _roll_back(self, pending: PendingChunk, n_chunks: int) -> None:
        del self.chunks[n_chunks:]
        for cid, msgs in pending.msgs.items():
            self.channel_stats[cid] -= len(msgs)
        self.message_start_time, self.message_end_time = self.good_start, self.good_end
        self.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))
        try:
            self.bio.close()  # may fail again flushing its buffer: what it wrote is cut off below
        except OSError:
            pass
        self.bio = self.path.open("r+b")
        self.bio.truncate(self.good_offset)
        self.bio.seek(self.good_offset)


class _BagWriter(Writer):
    """rosbags Writer on the roll-back MCAP storage, keeping its counts equal to the file's."""

    STORAGE_PLUGINS = {StoragePlugin.MCAP: _RollbackMcapWriter}  # type: ignore[dict-item]

    def __init__(self, path: Path) -> None:
        super().__init__(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)

    @property
    def mcap(self) -> _RollbackMcapWriter:
        assert isinstance(self.storage, _RollbackMcapWriter)
        return self.storage

    def write(self, connection: Connection, timestamp: int, data: bytes | memoryview) -> None:
        try:
            super().write(connection, timestamp, data)
        except OSError:
            storage = self.mcap
            if not storage.can_roll_back:
                raise
            self.counts = dict(storage.channel_stats)
            self.min_timestamp, self.max_timestamp = storage.good_start, storage.good_end
            raise


# ---------------------------------------------------------------------------------------------


@dataclass
class _TopicStats:
    msgtype: str | None = None
    accepted: int = 0
    dropped: int = 0


@dataclass
class _State:
    task: str
    target_object: str
    start_ns: int
    end_ns: int | None = None
    stop_reason: str | None = None
    error: str | None = None
    topics: dict[str, _TopicStats] = field(default_factory=dict)
    unrecorded: dict[str, str] = field(default_factory=dict)


class EpisodeWriter:
    """One episode being recorded: ``open`` -> ``put``... -> ``finalize``.

    ``put`` is safe to call from any thread and never touches the disk; a writer thread owns the
    bag. ``finalize`` is idempotent and returns the same summary every time. ``on_finished`` is
    called once, from the writer thread, when the bag has been closed (after ``finalize`` or on a
    disk error), with the summary; ``on_drop(topic, total_dropped)`` when a message is refused.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        task: str = "",
        target_object: str = "",
        software_version: str = "",
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        reserve_base_bytes: int = RESERVE_BASE_BYTES,
        typestore: Any = None,
        clock_ns: Callable[[], int] = time.time_ns,
        on_drop: Callable[[str, int], None] | None = None,
        on_finished: Callable[[EpisodeSummary], None] | None = None,
        flush_period_s: float = DEFAULT_FLUSH_PERIOD_S,
        compression: str = "none",
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not accepted; accepted: {', '.join(COMPRESSIONS)}")
        self.directory = Path(directory).expanduser().absolute()
        self.flush_period_s = float(flush_period_s)
        self.compression = compression
        self._lock_fd: int | None = None
        self.software_version = software_version
        self.max_queue_bytes = int(max_queue_bytes)
        self._reserve_base = int(reserve_base_bytes)
        self._typestore = typestore if typestore is not None else default_typestore()
        self._clock_ns = clock_ns
        self._on_drop = on_drop
        self._on_finished = on_finished
        self._state = _State(task, target_object, start_ns=0)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._items: deque[tuple[Any, ...]] = deque()
        self._queued_bytes = 0
        self._accepting = False
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._bag: _BagWriter | None = None
        self._connections: dict[str, Connection] = {}
        self._reserved = 0
        self._summary: EpisodeSummary | None = None
        self._done = threading.Event()
        self.peak_queued_bytes = 0

    # -- lifecycle --------------------------------------------------------------------------

    def open(
        self, topics: Iterable[TopicSpec] = (), unrecorded: dict[str, str] | None = None
    ) -> None:
        """Create the bag and start the writer thread; raises EpisodeError with the reason."""
        reason = check_writable(self.directory.parent)
        if reason:
            raise EpisodeError(reason)
        bag = _BagWriter(self.directory)
        try:
            bag.open()
        except Exception as exc:  # noqa: BLE001 - WriterError or OSError: both mean "cannot start"
            raise EpisodeError(f"cannot create episode {self.directory}: {exc}") from exc
        self._bag = bag
        try:
            bag.mcap.set_chunk_compression(self.compression)
            self._hold_lock()
            self._grow_reserve(0)
            for spec in topics:
                self._add_connection(spec)
            self._state.start_ns = self._clock_ns()
            self._state.unrecorded.update(unrecorded or {})
            self._write_info(complete=False)
            bag.mcap.sync()  # header and directory entries on disk before the first message
            _fsync_dir(self.directory)
            _fsync_dir(self.directory.parent)
        except OSError as exc:
            self._discard()
            raise EpisodeError(
                f"cannot start episode in {self.directory.parent}: {exc.strerror or exc}"
            ) from exc
        self._accepting = True
        self._thread = threading.Thread(
            target=self._run, name=f"episode-writer-{self.directory.name}", daemon=True
        )
        self._thread.start()
        _open_writers.add(self)

    def add_topic(self, spec: TopicSpec) -> None:
        """Register a topic found after ``open`` (its messages may follow at once)."""
        with self._wake:
            self._state.unrecorded.pop(spec.name, None)
            self._state.topics.setdefault(spec.name, _TopicStats()).msgtype = spec.msgtype
            self._items.append(("topic", spec))
            self._wake.notify()

    def report_unrecorded(self, topic: str, reason: str) -> None:
        """A configured topic that is not being recorded, and why (goes into episode.yaml)."""
        with self._lock:
            self._state.unrecorded[topic] = reason

    def set_labels(self, task: str | None = None, target_object: str | None = None) -> None:
        """Change task / target object; the values at finalize are the ones saved."""
        with self._lock:
            if task is not None:
                self._state.task = task
            if target_object is not None:
                self._state.target_object = target_object

    def put(self, topic: str, data: bytes, timestamp_ns: int) -> bool:
        """Queue one serialized message; False when refused (not recording, or queue full)."""
        size = len(data)
        with self._wake:
            if not self._accepting:
                return False
            stats = self._state.topics.get(topic)
            if stats is None or stats.msgtype is None:
                raise KeyError(f"topic {topic!r} was not added to episode {self.directory.name}")
            if self._queued_bytes + size > self.max_queue_bytes:
                stats.dropped += 1
                dropped = sum(s.dropped for s in self._state.topics.values())
            else:
                stats.accepted += 1
                self._queued_bytes += size
                self.peak_queued_bytes = max(self.peak_queued_bytes, self._queued_bytes)
                self._items.append(("msg", topic, data, timestamp_ns))
                if len(self._items) == 1:
                    self._wake.notify()
                return True
        if self._on_drop is not None:
            self._on_drop(topic, dropped)
        return False

    def finalize(self, reason: str = "stopped", timeout_s: float | None = None) -> EpisodeSummary:
        """Stop accepting, write everything queued, close the bag, write episode.yaml."""
        with self._wake:
            if self._state.stop_reason is None:
                self._state.stop_reason = reason
            if self._state.end_ns is None:
                self._state.end_ns = self._clock_ns()
            self._accepting = False
            self._stop_requested = True
            self._wake.notify()
        thread = self._thread
        if thread is None:  # never opened
            if self._summary is None:
                self._summary = self._make_summary(readable=False)
            return self._summary
        if thread is not threading.current_thread():  # on_finished may call back in
            thread.join(timeout_s)
        if self._summary is None:
            raise TimeoutError(f"episode {self.directory} is still being written")
        return self._summary

    @property
    def recording(self) -> bool:
        return self._accepting

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def error(self) -> str | None:
        return self._state.error

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def accepted_counts(self) -> dict[str, int]:
        with self._lock:
            return {t: s.accepted for t, s in self._state.topics.items()}

    def frames_dropped(self) -> int:
        with self._lock:
            return sum(s.dropped for s in self._state.topics.values())

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        bag = self._bag
        assert bag is not None
        last_sync = time.monotonic()
        try:
            while True:
                with self._wake:
                    while not self._items and not self._stop_requested:
                        left = last_sync + self.flush_period_s - time.monotonic()
                        if left <= 0 and bag.mcap.chunk.msgs:
                            break
                        self._wake.wait(max(left, 0.0) if bag.mcap.chunk.msgs else self.flush_period_s)
                    batch, self._items = self._items, deque()
                    stop = self._stop_requested and not batch
                if stop:
                    break
                written = 0
                for item in batch:
                    if item[0] == "msg":
                        _, topic, data, stamp = item
                        bag.write(self._connections[topic], stamp, data)
                        written += len(data)
                    else:
                        self._add_connection(item[1])
                with self._lock:
                    self._queued_bytes -= written
                if time.monotonic() - last_sync >= self.flush_period_s:
                    # What is written so far survives a kill or a power cut from here on.
                    bag.mcap.sync()
                    last_sync = time.monotonic()
                self._grow_reserve(len(getattr(bag.mcap, "chunks", ())))
        except Exception as exc:  # noqa: BLE001 - any failure stops the episode, bag kept
            self._fail(exc)
        self._close()

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            name = errno.errorcode.get(exc.errno or 0, "")
            text = f"disk error {name}: {exc.strerror or exc}".replace(" : ", ": ")
            if exc.errno == errno.ENOSPC:
                text = f"disk full ({name}: {exc.strerror})"
        else:
            text = f"{type(exc).__name__}: {exc}"
        with self._wake:
            self._accepting = False
            self._state.error = text
            self._state.stop_reason = f"error: {text}"
            if self._state.end_ns is None:
                self._state.end_ns = self._clock_ns()
            self._items.clear()
            self._queued_bytes = 0
        _log.error("episode %s stopped: %s", self.directory, text)

    def _hold_lock(self) -> None:
        from spatialvlm_ros.spatial.recovery import LOCK_FILE

        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh directory: nobody else has it
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
            try:
                from spatialvlm_ros.spatial.recovery import LOCK_FILE

                (self.directory / LOCK_FILE).unlink()
            except OSError:
                pass

    def _close(self) -> None:
        readable = False
        self._release_reserve()  # its space is what the summary and metadata are written into
        bag = self._bag
        if bag is not None and bag.storage is not None:
            try:
                with self._lock:
                    bag.set_custom_data("spatialvlm_ros.task", self._state.task)
                    bag.set_custom_data("spatialvlm_ros.target_object", self._state.target_object)
                bag.close()
                readable = True
            except Exception as exc:  # noqa: BLE001
                _log.error("episode %s: bag could not be finalized: %s", self.directory, exc)
                if self._state.error is None:
                    self._fail(exc)
                with self._lock:
                    self._state.error = f"{self._state.error}; bag not finalized: {exc}"
                try:
                    bag.abort()
                except Exception:  # noqa: BLE001
                    pass
        try:
            self._write_info(complete=readable)
        except OSError as exc:
            _log.error("episode %s: %s not written: %s", self.directory, EPISODE_FILE, exc)
        self._summary = self._make_summary(readable)
        self._release_lock()
        _open_writers.discard(self)
        self._done.set()
        if self._on_finished is not None:
            try:
                self._on_finished(self._summary)
            except Exception:  # noqa: BLE001
                _log.exception("on_finished callback failed")

    def _discard(self) -> None:
        self._release_lock()
        bag, self._bag = self._bag, None
        if bag is not None and bag.storage is not None:
            try:
                bag.abort()
            except Exception:  # noqa: BLE001
                pass
        for path in sorted(self.directory.glob("*"), reverse=True) + [self.directory]:
            try:
                path.rmdir() if path.is_dir() else path.unlink()
            except OSError:
                pass

    def _add_connection(self, spec: TopicSpec) -> None:
        bag = self._bag
        assert bag is not None
        if spec.name in self._connections:
            return
        self._connections[spec.name] = bag.add_connection(
            spec.name, spec.msgtype, typestore=self._typestore,
            offered_qos_profiles=list(spec.offered_qos),
        )
        with self._lock:
            self._state.topics.setdefault(spec.name, _TopicStats()).msgtype = spec.msgtype

    def _grow_reserve(self, n_chunks: int) -> None:
        want = self._reserve_base + RESERVE_BYTES_PER_CHUNK * (n_chunks + 1024)
        if want <= self._reserved:
            return
        want += want // 2  # grow in steps, not on every chunk
        fd = os.open(self.directory / RESERVE_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, want)
            else:  # pragma: no cover - non-Linux: real bytes, not a sparse file
                os.pwrite(fd, b"\0" * (want - self._reserved), self._reserved)
        finally:
            os.close(fd)
        self._reserved = want

    def _release_reserve(self) -> None:
        try:
            (self.directory / RESERVE_FILE).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("episode %s: could not delete %s: %s", self.directory, RESERVE_FILE, exc)
        self._reserved = 0

    # -- episode.yaml -------------------------------------------------------------------------

    def _bag_counts(self) -> dict[str, int]:
        bag = self._bag
        if bag is None:
            return {}
        return {c.topic: bag.counts.get(c.id, 0) for c in bag.connections}

    def _make_summary(self, readable: bool) -> EpisodeSummary:
        with self._lock:
            counts = self._bag_counts()
            accepted = {t: s.accepted for t, s in self._state.topics.items()}
            dropped = sum(s.dropped for s in self._state.topics.values())
            not_written = sum(max(0, n - counts.get(t, 0)) for t, n in accepted.items())
            return EpisodeSummary(
                directory=self.directory,
                stop_reason=self._state.stop_reason or "",
                error=self._state.error,
                message_counts=counts,
                frames_dropped=dropped + not_written,
                messages_not_written=not_written,
                bag_readable=readable,
            )

    def _write_info(self, complete: bool) -> None:
        with self._lock:
            st = self._state
            counts = self._bag_counts()
            end_ns = st.end_ns
            topics = {}
            for name in sorted(set(st.topics) | set(counts)):
                stats = st.topics.get(name, _TopicStats())
                in_bag = counts.get(name, 0)
                topics[name] = {
                    "type": stats.msgtype,
                    "messages": in_bag,
                    "dropped_queue_full": stats.dropped,
                    "not_written_after_error": max(0, stats.accepted - in_bag),
                }
            dropped = sum(v["dropped_queue_full"] for v in topics.values())
            not_written = sum(v["not_written_after_error"] for v in topics.values())
            info: dict[str, Any] = {
                "format": EPISODE_FORMAT,
                "episode": self.directory.name,
                "task": st.task,
                "target_object": st.target_object,
                "start_time": _iso(st.start_ns),
                "start_time_ns": st.start_ns,
                "end_time": _iso(end_ns) if end_ns is not None else None,
                "end_time_ns": end_ns,
                "duration_s": None if end_ns is None else round((end_ns - st.start_ns) / 1e9, 6),
                "finalized": complete,
                "stop_reason": st.stop_reason,
                "error": st.error,
                "message_count": sum(counts.values()),
                "message_counts": {t: counts.get(t, 0) for t in topics},
                "frames_dropped": dropped + not_written,
                "frames_dropped_queue_full": dropped,
                "messages_not_written_after_error": not_written,
                "topics": topics,
                "unrecorded_topics": dict(sorted(st.unrecorded.items())),
                "bag": {"storage": "mcap", "rosbag2_version": BAG_VERSION},
                "software": {"package": "spatialvlm_ros", "version": self.software_version},
            }
        text = yaml.safe_dump(info, sort_keys=False, allow_unicode=True, width=100)
        tmp = self.directory / (EPISODE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / EPISODE_FILE)
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    """Directory entries (a new or renamed file) reach the disk only with the directory's fsync."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _OpenWriters:
    """Episodes still open at interpreter exit are finalized (daemon writer threads still run)."""

    def __init__(self) -> None:
        self._writers: set[EpisodeWriter] = set()
        self._lock = threading.Lock()
        self._registered = False

    def add(self, writer: EpisodeWriter) -> None:
        with self._lock:
            self._writers.add(writer)
            if not self._registered:
                import atexit

                atexit.register(self.finalize_all)
                self._registered = True

    def discard(self, writer: EpisodeWriter) -> None:
        with self._lock:
            self._writers.discard(writer)

    def finalize_all(self) -> None:
        with self._lock:
            writers = list(self._writers)
        for writer in writers:
            writer.finalize("interpreter exit", timeout_s=60.0)


_open_writers = _OpenWriters()


# ---------------------------------------------------------------------------------------------
# Reading


def load_episode_info(path: Path | str) -> dict[str, Any]:
    """The episode.yaml of an episode directory, as a dict."""
    with open(Path(path) / EPISODE_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_episode(
    path: Path | str, topics: Iterable[str] | None = None
) -> Iterator[EpisodeMessage]:
    """Yield (topic, msgtype, timestamp ns, rawdata) of an episode's bag in time order.

    ``rawdata`` is the CDR exactly as recorded; decode it with rosbags' typestore
    (``AnyReader.deserialize``) or rclpy's ``deserialize_message``.
    """
    wanted = set(topics) if topics is not None else None
    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, stamp, raw in reader.messages(connections=conns):
            yield EpisodeMessage(conn.topic, conn.msgtype, stamp, raw)

"""Recovery of episodes whose recorder never finalized them (SIGKILL, the OOM killer, a power cut).

ROS-free. Such a bag has chunks but no summary, footer or metadata.yaml, so the mcap library's normal
reader and rosbags refuse it. ``recover_episode`` reads its records up to the cut with the mcap
library's ``StreamReader`` (the first damaged or incomplete record ends the read), writes them into a
new bag with rosbags' writer (the same writer the recorder uses), swaps it in, and rewrites
``episode.yaml`` with ``finalized: false, recovered: true`` and the counts actually recovered.

The original file is kept as ``<name>.mcap.unrecovered`` until the new bag has been read back in full;
then it is deleted (``keep_original`` keeps it). An episode another process is still recording (its
``.recording.lock`` is held) is never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_log = logging.getLogger(__name__)

LOCK_FILE = ".recording.lock"


class RecoveryError(RuntimeError):
    """The episode cannot be recovered; the text says why."""


@dataclass
class RecoveryResult:
    directory: Path
    status: str  # "recovered" | "already readable" | "in use" | "failed"
    message_counts: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_total: int = 0
    stopped_at: str | None = None  # why the stream read ended before the file's end
    skipped_topics: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def message_count(self) -> int:
        return sum(self.message_counts.values())

    def summary(self) -> str:
        if self.status == "recovered":
            return (f"{self.directory.name}: recovered {self.message_count} messages "
                    f"({self.bytes_read / 1e6:.1f} of {self.bytes_total / 1e6:.1f} MB readable"
                    + (f"; read ended: {self.stopped_at}" if self.stopped_at else "") + ")")
        if self.status == "failed":
            return f"{self.directory.name}: FAILED: {self.error}"
        return f"{self.directory.name}: {self.status}"


@contextmanager
def recording_lock(directory: Path, blocking: bool = False) -> Iterator[bool]:
    """An exclusive lock on an episode directory (held by the recorder while it writes it).

    Yields False when another process holds it. A killed process's lock is released by the kernel.
    """
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def bag_is_readable(directory: Path) -> bool:
    """Whether rosbags opens the bag (metadata.yaml and an MCAP with its summary)."""
    from rosbags.highlevel import AnyReader

    try:
        with AnyReader([directory]):
            return True
    except Exception:  # noqa: BLE001 - any failure to open means "not readable"
        return False


def needs_recovery(directory: Path) -> bool:
    """An episode whose episode.yaml says finalized: false and whose bag does not open."""
    from spatialvlm_ros.spatial.episodes import EPISODE_FILE, load_episode_info

    if not (directory / EPISODE_FILE).is_file():
        return False
    try:
        info = load_episode_info(directory) or {}
    except Exception:  # noqa: BLE001 - a broken episode.yaml: judge by the bag alone
        info = {}
    if info.get("finalized") is True or info.get("recovered") is True:
        return False
    return not bag_is_readable(directory)


def find_unfinalized(root: Path) -> list[Path]:
    """Episode directories directly under ``root`` (or ``root`` itself) that need recovery."""
    from spatialvlm_ros.spatial.episodes import EPISODE_FILE

    root = Path(root).expanduser()
    if (root / EPISODE_FILE).is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and (p / EPISODE_FILE).is_file())
    else:
        candidates = []
    return [p for p in candidates if needs_recovery(p)]


def _stream_records(path: Path, result: RecoveryResult) -> Iterator[Any]:
    """The MCAP's records in file order, up to the first one that is damaged or cut off."""
    from mcap.stream_reader import StreamReader

    with open(path, "rb") as f:
        reader = StreamReader(f, skip_magic=False, emit_chunks=False, record_size_limit=1 << 31)
        try:
            for record in reader.records:
                result.bytes_read = f.tell()
                yield record
        except Exception as exc:  # noqa: BLE001 - end of file mid-record, bad compression, ...
            result.stopped_at = f"{type(exc).__name__}: {exc}".strip(": ") or type(exc).__name__


def _qos(channel: Any) -> list[Any]:
    from rosbags.rosbag2.storage_mcap import parse_qos

    text = (channel.metadata or {}).get("offered_qos_profiles", "")
    try:
        return list(parse_qos(text)) if text else []
    except Exception:  # noqa: BLE001 - QoS is informative; a message without it is still a message
        return []


def _rewrite(source: Path, work_dir: Path, result: RecoveryResult, typestore: Any,
             custom: dict[str, str]) -> None:
    """Write the readable records of ``source`` into a new bag at ``work_dir`` (rosbags' writer)."""
    from mcap.records import Channel, Message, Schema
    from rosbags.rosbag2 import StoragePlugin, Writer

    from spatialvlm_ros.spatial.episodes import BAG_VERSION

    writer = Writer(work_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    schemas: dict[int, str] = {}
    connections: dict[int, Any] = {}
    topics: dict[int, str] = {}
    try:
        for record in _stream_records(source, result):
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                msgtype = schemas.get(record.schema_id)
                topics[record.id] = record.topic
                if msgtype is None or record.id in connections:
                    continue
                if msgtype not in typestore.fielddefs:
                    result.skipped_topics[record.topic] = f"type {msgtype} unknown to rosbags' typestore"
                    continue
                connections[record.id] = writer.add_connection(
                    record.topic, msgtype, typestore=typestore,
                    serialization_format=record.message_encoding or "cdr",
                    offered_qos_profiles=_qos(record))
            elif isinstance(record, Message):
                conn = connections.get(record.channel_id)
                if conn is None:
                    continue
                writer.write(conn, record.log_time, record.data)
                topic = topics[record.channel_id]
                result.message_counts[topic] = result.message_counts.get(topic, 0) + 1
        for key, value in custom.items():
            writer.set_custom_data(key, value)
    finally:
        writer.close()


def recover_episode(directory: Path | str, keep_original: bool = False, typestore: Any = None,
                    force: bool = False) -> RecoveryResult:
    """Rebuild a readable bag and episode.yaml from an episode cut off mid-recording.

    Returns the result (``status`` says what happened); raises nothing for a bag that cannot be
    recovered (``status == "failed"``, ``error`` says why).
    """
    from spatialvlm_ros.spatial.episodes import default_typestore

    directory = Path(directory).expanduser().absolute()
    result = RecoveryResult(directory, "failed")
    if not directory.is_dir():
        result.error = f"{directory} is not a directory"
        return result
    with recording_lock(directory) as free:
        if not free:
            result.status = "in use"
            result.error = "another process is recording this episode"
            return result
        if not force and bag_is_readable(directory):
            result.status = "already readable"
            return result
        try:
            _recover_locked(directory, result, keep_original, typestore or default_typestore())
            result.status = "recovered"
        except (RecoveryError, OSError) as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - rosbags' writer errors, a broken episode.yaml
            result.error = f"{type(exc).__name__}: {exc}"
    if result.status == "recovered":
        _log.info("%s", result.summary())
    else:
        _log.error("%s", result.summary())
    return result


def _find_mcap(directory: Path) -> Path:
    own = directory / f"{directory.name}.mcap"
    for candidate in (own, directory / f"{directory.name}.mcap.unrecovered"):
        if candidate.is_file():
            return candidate
    found = sorted(directory.glob("*.mcap"))
    if not found:
        raise RecoveryError(f"no .mcap file in {directory}")
    return found[0]


def _recover_locked(directory: Path, result: RecoveryResult, keep_original: bool, typestore: Any) -> None:
    from spatialvlm_ros.spatial.episodes import EPISODE_FILE, RESERVE_FILE, _fsync_dir, load_episode_info

    source = _find_mcap(directory)
    result.bytes_total = source.stat().st_size
    try:
        info = load_episode_info(directory) or {}
    except Exception:  # noqa: BLE001
        info = {}
    custom = {"spatialvlm_ros.task": str(info.get("task") or ""),
              "spatialvlm_ros.target_object": str(info.get("target_object") or "")}
    # The new bag is built beside the episode under the episode's own name (rosbags names the
    # .mcap after its directory and metadata.yaml lists that name), then moved in.
    work_root = directory.parent / f".{directory.name}.recovering"
    shutil.rmtree(work_root, ignore_errors=True)
    work_root.mkdir()
    work_dir = work_root / directory.name
    try:
        _rewrite(source, work_dir, result, typestore, custom)
        if not result.message_count:
            raise RecoveryError("no message could be read from the bag"
                                + (f" ({result.stopped_at})" if result.stopped_at else ""))
        _check_readable(work_dir, result.message_counts)
        new_mcap = work_dir / f"{directory.name}.mcap"
        kept = directory / f"{directory.name}.mcap.unrecovered"
        if source != kept:
            os.replace(source, kept)
        os.replace(new_mcap, directory / new_mcap.name)
        os.replace(work_dir / "metadata.yaml", directory / "metadata.yaml")
        _fsync_dir(directory)
        if not keep_original:
            kept.unlink()
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    (directory / RESERVE_FILE).unlink(missing_ok=True)
    _write_recovered_info(directory, info, result, EPISODE_FILE)


def _check_readable(bag: Path, counts: dict[str, int]) -> None:
    from rosbags.highlevel import AnyReader

    read: dict[str, int] = {}
    with AnyReader([bag]) as reader:
        for conn, _, _ in reader.messages():
            read[conn.topic] = read.get(conn.topic, 0) + 1
    if read != counts:
        raise RecoveryError(f"the rebuilt bag reads back {read}, not the {counts} written")


def _write_recovered_info(directory: Path, info: dict[str, Any], result: RecoveryResult,
                          episode_file: str) -> None:
    from rosbags.highlevel import AnyReader

    with AnyReader([directory]) as reader:
        end_ns = reader.end_time if result.message_count else None
    topics = dict(info.get("topics") or {})
    for name, count in result.message_counts.items():
        entry = dict(topics.get(name) or {})
        entry["messages"] = count
        topics[name] = entry
    for name, entry in topics.items():
        if name not in result.message_counts and isinstance(entry, dict):
            entry["messages"] = 0
    start_ns = info.get("start_time_ns")
    info.update({
        "finalized": False,
        "recovered": True,
        "stop_reason": info.get("stop_reason") or "the recorder stopped without finalizing the episode "
                                                  "(killed, out of memory or power loss); recovered",
        "end_time_ns": end_ns,
        "duration_s": None if end_ns is None or start_ns is None else round((end_ns - start_ns) / 1e9, 6),
        "message_count": result.message_count,
        "message_counts": dict(sorted(result.message_counts.items())),
        "topics": topics,
        "recovery": {
            "bytes_readable": result.bytes_read,
            "bytes_in_file": result.bytes_total,
            "read_ended": result.stopped_at,
            "skipped_topics": result.skipped_topics,
            "note": "messages accepted by the recorder after the last complete chunk on disk are lost",
        },
    })
    from spatialvlm_ros.spatial.episodes import _fsync_dir, _iso

    if end_ns is not None:
        info["end_time"] = _iso(end_ns)
    text = yaml.safe_dump(info, sort_keys=False, allow_unicode=True, width=100)
    tmp = directory / (episode_file + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / episode_file)
    _fsync_dir(directory)


def recover_all(paths: Iterable[Path | str], keep_original: bool = False) -> list[RecoveryResult]:
    """Recover every unfinalized episode among ``paths`` (episode directories or folders of them)."""
    results = []
    for path in paths:
        for episode in find_unfinalized(Path(path)):
            results.append(recover_episode(episode, keep_original=keep_original))
    return results

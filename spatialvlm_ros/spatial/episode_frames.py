"""Recorded episodes as frames: find episode directories, choose their topics, and read the image topic's
frames from the bag with the depth and intrinsics that belong to each.

ROS-free (rosbags' typestore decodes the messages). Shared by the annotator (``annotation.py``) and the
data engine (``vqa/sources.py``), so that both number frames and join depth the same way:

* Frames are numbered by their position among the image topic's messages in the bag (``frame_index``,
  from 0, whatever the stride), so a resumed or differently-strided run names the same frame the same.
* Depth and camera_info are joined to a frame by the live nodes' own rule (``stamp_sync.py``): header
  stamp within ``sync.slop_s``, arrival within ``sync.max_age_s``; one that does not match is not
  used, and ``FrameRecord.depth_note`` says why. Messages are read ``sync.max_age_s`` past a frame (by
  receive time) before it is assembled; a message with a zero stamp is placed at its receive time.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialvlm_ros.spatial.episodes import EPISODE_FILE, default_typestore, read_episode
from spatialvlm_ros.spatial.estimator import Frame, intrinsics_from_camera_info
from spatialvlm_ros.spatial.imaging import (
    ImageDecodeError,
    metres_from_depth_msg,
    rgb_from_compressed_msg,
    rgb_from_image_msg,
)
from spatialvlm_ros.spatial.stamp_sync import StampedBuffer, SyncPolicy, aligned_depth

__all__ = [
    "EpisodeFailure",
    "EpisodeTopics",
    "FrameRecord",
    "choose_topics",
    "find_episodes",
    "header_stamp_ns",
    "inspect_episode",
    "iter_frames",
]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEPTH_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
HISTORY = 128  # depth and camera_info messages kept for matching (4 s of 30 Hz depth)


class EpisodeFailure(RuntimeError):
    """This episode cannot be annotated; the text says why (and what to do). Others still can."""


# ---------------------------------------------------------------------------------------------
# Finding episodes and their topics


def _is_episode(path: Path) -> bool:
    return path.is_dir() and (
        (path / "metadata.yaml").is_file() or (path / EPISODE_FILE).is_file()
        or any(path.glob("*.mcap"))
    )


def find_episodes(paths: Iterable[Path | str]) -> list[Path]:
    """Episode directories named by ``paths``: each is an episode or a folder of episodes."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise EpisodeFailure(f"{path} does not exist")
        if _is_episode(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise EpisodeFailure(f"{path} is not an episode directory or a folder of episodes")
        inside = sorted(p for p in path.iterdir() if _is_episode(p))
        if not inside:
            raise EpisodeFailure(f"no episodes in {path} (an episode directory holds metadata.yaml, "
                                 f"a .mcap file and {EPISODE_FILE})")
        found.extend(inside)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


@dataclass(frozen=True)
class EpisodeTopics:
    """What the bag holds: topic -> type and topic -> message count."""

    types: dict[str, str]
    counts: dict[str, int]

    def of_types(self, *msgtypes: str) -> list[str]:
        return sorted(t for t, ty in self.types.items() if ty in msgtypes)


def inspect_episode(path: Path) -> EpisodeTopics:
    """Topics, types and counts from the bag's index (reads no messages)."""
    from rosbags.highlevel import AnyReader

    types: dict[str, str] = {}
    counts: dict[str, int] = {}
    with AnyReader([Path(path)]) as reader:
        for conn in reader.connections:
            types[conn.topic] = conn.msgtype
            counts[conn.topic] = counts.get(conn.topic, 0) + int(conn.msgcount)
    return EpisodeTopics(types, counts)


def _basename(topic: str) -> str:
    return topic.rstrip("/").rsplit("/", 1)[-1]


def _parent(topic: str) -> str:
    return topic.rstrip("/").rsplit("/", 1)[0]


def _match_topic(wanted: str, candidates: Sequence[str], what: str) -> str:
    """``wanted`` as given, or the one topic ending in it ("image" matches /robot/image)."""
    if wanted in candidates:
        return wanted
    suffix = "/" + wanted.strip("/")
    hits = [t for t in candidates if t.endswith(suffix)]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(candidates) or "none"
    if hits:
        raise EpisodeFailure(f"{what} {wanted!r} matches several topics ({', '.join(hits)}); "
                             "give the full name")
    raise EpisodeFailure(f"{what} {wanted!r} is not in the bag; topics of a usable type: {listed}")


def choose_topics(
    topics: EpisodeTopics, image_topic: str | None, depth_topic: str | None,
    camera_info_topic: str | None,
) -> tuple[str, str | None, str | None]:
    """(image, depth or None, camera_info or None). None asks for the default, "" for none.

    The default image topic is the recorded sensor_msgs/Image or CompressedImage topic, preferring one
    named ``image`` (the recorder's default) and never one named like depth. Depth defaults to the
    Image topic named ``depth`` (or with depth in its name) nearest the image topic; camera_info to the
    CameraInfo topic beside the image topic, or the only one.
    """
    images = topics.of_types(*IMAGE_TYPES)
    if image_topic:
        image = _match_topic(image_topic, images, "--image-topic")
    else:
        colour = [t for t in images if "depth" not in t.lower()]
        named = [t for t in colour if _basename(t) == "image"]
        compressed = [t for t in colour if t.endswith("/image/compressed")]
        pick = named or compressed or colour
        if len(pick) != 1:
            listed = ", ".join(images) or "none"
            reason = "has no image topic" if not pick else "has several image topics"
            raise EpisodeFailure(f"the bag {reason} to choose from (sensor_msgs Image or "
                                 f"CompressedImage: {listed}); name one with --image-topic")
        image = pick[0]

    depth: str | None = None
    depth_candidates = [t for t in topics.of_types(DEPTH_TYPE) if t != image]
    if depth_topic:
        depth = _match_topic(depth_topic, depth_candidates, "--depth-topic")
    elif depth_topic is None:
        named = [t for t in depth_candidates if "depth" in t.lower()]
        if named:
            depth = max(named, key=lambda t: (_common_prefix(t, image), _basename(t) == "depth"))

    info: str | None = None
    infos = topics.of_types(CAMERA_INFO_TYPE)
    if camera_info_topic:
        info = _match_topic(camera_info_topic, infos, "--camera-info-topic")
    elif camera_info_topic is None and infos:
        beside = [t for t in infos if _parent(t) in (_parent(image), _parent(_parent(image)))]
        if len(beside) >= 1:
            info = max(beside, key=lambda t: _common_prefix(t, image))
        elif len(infos) == 1:
            info = infos[0]
    return image, depth, info


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a.split("/"), b.split("/")]))


# ---------------------------------------------------------------------------------------------
# Frames out of a bag


@dataclass
class FrameRecord:
    """One frame of the image topic: decoded (``frame``) or not (``error`` says why)."""

    frame_index: int
    stamp_ns: int  # the image's header stamp (its receive time when the stamp is zero)
    bag_time_ns: int  # when the recorder received it
    frame: Frame | None = None
    error: str | None = None
    depth_note: str | None = None


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp of a CDR message whose first field is std_msgs/Header (Image, CameraInfo, ...).

    Read from the bytes (encapsulation header, then int32 sec, uint32 nanosec) so that depth images
    kept for matching need not be deserialized.
    """
    if len(raw) < 12:
        return 0
    order = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def iter_frames(
    path: Path, image_topic: str, depth_topic: str | None = None,
    camera_info_topic: str | None = None, wanted: Callable[[int], bool] | None = None,
    typestore: Any = None, sync: SyncPolicy | None = None,
) -> Iterator[FrameRecord]:
    """The image topic's frames in bag order, with depth and intrinsics; only ``wanted`` ones decoded."""
    store = typestore if typestore is not None else default_typestore()
    policy = sync or SyncPolicy()
    names = [t for t in (image_topic, depth_topic, camera_info_topic) if t]
    depth_hist: StampedBuffer = StampedBuffer(HISTORY)  # (raw bytes, msgtype) by stamp
    info_hist: StampedBuffer = StampedBuffer(HISTORY)  # Intrinsics or None by stamp
    pending: deque = deque()  # (index, stamp, bag time, raw, msgtype)
    index = -1

    def assemble(index: int, stamp: int, bag_ns: int, raw: bytes, msgtype: str) -> FrameRecord:
        record = FrameRecord(index, stamp, bag_ns)
        try:
            msg = store.deserialize_cdr(raw, msgtype)
            if msgtype.endswith("CompressedImage"):
                rgb = rgb_from_compressed_msg(msg)
            else:
                rgb = rgb_from_image_msg(msg)
        except ImageDecodeError as exc:
            record.error = f"bad image: {exc}"
            return record
        except Exception as exc:  # noqa: BLE001 - undecodable bytes are a bad frame, not a crash
            record.error = f"bad image: cannot deserialize {msgtype}: {type(exc).__name__}: {exc}"
            return record
        notes = []
        if policy.camera_info_static:
            intrinsics = info_hist.newest()
        else:
            info_match = info_hist.match(stamp, bag_ns, policy, "camera_info")
            intrinsics = info_match.value
            notes += [info_match.reason] if info_match.reason else []
        frame = Frame(rgb=rgb, intrinsics=intrinsics)
        depth_match = depth_hist.match(stamp, bag_ns, policy, "depth")
        notes += [depth_match.reason] if depth_match.reason else []
        depth = depth_match.value
        if depth is not None:
            frame.depth_m, note = aligned_depth(
                lambda: metres_from_depth_msg(store.deserialize_cdr(depth[0], depth[1])), rgb.shape)
            notes += [note] if note else []
        record.depth_note = "; ".join(notes) or None
        record.frame = frame
        return record

    for msg in read_episode(path, names):
        stamp = header_stamp_ns(msg.rawdata) or msg.timestamp
        while pending and msg.timestamp > pending[0][2] + policy.max_age_ns:
            yield assemble(*pending.popleft())
        if msg.topic == image_topic:
            index += 1
            if wanted is None or wanted(index):
                pending.append((index, stamp, msg.timestamp, msg.rawdata, msg.msgtype))
        elif msg.topic == depth_topic:
            depth_hist.add(stamp, msg.timestamp, (msg.rawdata, msg.msgtype))
        elif msg.topic == camera_info_topic:
            try:
                intrinsics = intrinsics_from_camera_info(store.deserialize_cdr(msg.rawdata, msg.msgtype))
            except Exception:  # noqa: BLE001 - an unreadable camera_info is no camera_info
                intrinsics = None
            info_hist.add(stamp, msg.timestamp, intrinsics)
    while pending:
        yield assemble(*pending.popleft())

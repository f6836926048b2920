"""Where the data engine's frames come from: recorded episodes (rosbag2 directories from recorder_node,
read with the annotator's topic choice and depth/camera_info pairing) and plain folders of images
(colour only: depth from the depth model, intrinsics from a stated field of view)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from spatialvlm_ros.spatial.episode_frames import (
    EpisodeFailure,
    FrameRecord,
    choose_topics,
    find_episodes,
    inspect_episode,
    iter_frames,
)
from spatialvlm_ros.spatial.episodes import load_episode_info
from spatialvlm_ros.spatial.estimator import Frame

__all__ = ["IMAGE_SUFFIXES", "Source", "find_sources"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Source:
    """One episode or one image folder."""

    kind: str  # episode | image_folder
    path: Path
    task: str = ""
    target_object: str = ""
    image_topic: str = ""
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    n_frames: int = 0
    _images: list[Path] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def frames(self, wanted: Callable[[int], bool] | None = None) -> Iterator[FrameRecord]:
        if self.kind == "episode":
            yield from iter_frames(self.path, self.image_topic, self.depth_topic, self.camera_info_topic, wanted)
            return
        for index, path in enumerate(self._images or []):
            if wanted is not None and not wanted(index):
                continue
            record = FrameRecord(index, 0, 0)
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None or bgr.ndim != 3 or min(bgr.shape[:2]) < 2:
                record.error = f"bad image: {path.name} cannot be read as a colour image"
            else:
                record.frame = Frame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            yield record


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_source(path: Path, image_topic: str | None = None, depth_topic: str | None = None,
                camera_info_topic: str | None = None) -> Source:
    """An episode's topics and labels, or an image folder's files. Raises EpisodeFailure."""
    images = _image_files(path) if path.is_dir() else []
    if images and not (path / "metadata.yaml").is_file():
        return Source("image_folder", path, n_frames=len(images), _images=images)
    try:
        topics = inspect_episode(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable bag is this source's failure only
        raise EpisodeFailure(f"cannot read the bag: {type(exc).__name__}: {exc}") from exc
    image, depth, info = choose_topics(topics, image_topic, depth_topic, camera_info_topic)
    labels: dict[str, Any] = {}
    try:
        labels = load_episode_info(path) or {}
    except Exception:  # noqa: BLE001 - no or broken episode.yaml: no task and target from it
        labels = {}
    return Source("episode", path, str(labels.get("task") or ""), str(labels.get("target_object") or ""),
                  image, depth, info, topics.counts.get(image, 0))


def find_sources(paths: Iterable[Path | str]) -> list[Path]:
    """Episode directories and image folders named by ``paths`` (each is one, or a folder of them)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir() and _image_files(path) and not (path / "metadata.yaml").is_file():
            found.append(path.resolve())
            continue
        if path.is_dir() and not any(path.glob("*.mcap")) and not (path / "metadata.yaml").is_file():
            folders = [p for p in sorted(path.iterdir()) if p.is_dir() and _image_files(p)
                       and not (p / "metadata.yaml").is_file()]
            if folders:
                found.extend(p.resolve() for p in folders)
                try:
                    found.extend(find_episodes([path]))
                except EpisodeFailure:
                    pass
                continue
        found.extend(find_episodes([path]))
    return list(dict.fromkeys(found))

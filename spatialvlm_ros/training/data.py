"""Training data rendered on the fly: a random scene, one question about it, the dense auxiliary targets.

Every batch is a pure function of (seed, step), so a run is reproducible and a resumed run sees exactly
the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from spatialvlm_ros.spatial.synth import (
    GRIPPER,
    GRIPPER_ID,
    OBJECT_ID0,
    QA,
    SHAPES,
    RenderResult,
    Scene,
    random_scene,
    render,
    sample_qa,
)
from spatialvlm_ros.training.tiny_spatial import (
    ANSWER_AUX_SIZE,
    AUX_LAYOUT,
    AUX_SIZE,
    CLASSES,
    GRID_COLS,
    GRID_ROWS,
    LENGTH_SCALE,
    POSITION_MEAN,
    POSITION_SCALE,
)

# Training frames are rendered at this size; the processor resizes them (and 640x480 camera frames)
# to the model's 168x140 (WxH) input, so both look alike to the model (pixel values differ by 0.005 on average).
RENDER_SIZE = (224, 168)
# Half the training scenes hold a same-colour pair (an orange cube and an orange cylinder): without
# them the model's misses were mostly answers for the other object of such a pair.
TWIN_PROBABILITY = 0.5
# An object or the gripper counts as seen with at least this many pixels at RENDER_SIZE.
MIN_VISIBLE_PIXELS = 12


@dataclass
class Sample:
    image: np.ndarray
    qa: QA
    frame: RenderResult | None  # kept for the auxiliary targets


def _normalise_position(p: np.ndarray) -> np.ndarray:
    return (np.asarray(p, float) - POSITION_MEAN) / POSITION_SCALE


def aux_targets(frame: RenderResult, rows: int = GRID_ROWS, cols: int = GRID_COLS) -> np.ndarray:
    """What the renderer knows about each image region, in ``tiny_spatial.AUX_LAYOUT``."""
    scene = frame.scene
    if scene.gripper is None:
        raise ValueError("auxiliary targets need a scene with a gripper")
    L = AUX_LAYOUT
    out = np.zeros((rows, cols, AUX_SIZE), np.float32)

    def coverage(instance_id: int) -> tuple[np.ndarray, bool]:
        mask = frame.instance == instance_id
        seen = int(mask.sum()) >= MIN_VISIBLE_PIXELS
        return cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA), seen

    cover, seen = coverage(GRIPPER_ID)
    out[..., L["gripper_cover"]] = cover[..., None]
    out[..., L["gripper_seen"]] = float(seen)
    out[..., L["gripper_xyz"]] = _normalise_position(scene.centre_camera("gripper"))
    for i, obj in enumerate(scene.objects):
        name = f"{obj.colour} {obj.shape}"
        if name not in CLASSES:
            continue
        c = CLASSES.index(name)
        cover, seen = coverage(OBJECT_ID0 + i)
        out[..., L["class_cover"].start + c] = cover
        shape = L["shape_cover"].start + SHAPES.index(obj.shape)
        out[..., shape] = np.minimum(out[..., shape] + cover, 1.0)
        out[..., L["class_seen"].start + c] = float(seen)
        xyz = L["class_xyz"].start + 3 * c
        out[..., xyz:xyz + 3] = _normalise_position(scene.centre_camera(obj))
        out[..., L["class_width"].start + c] = obj.width / LENGTH_SCALE
        out[..., L["class_gripper_dist"].start + c] = scene.gripper_distance(obj) / LENGTH_SCALE
    out[..., L["table_xyz"]] = _table_points(scene, frame.depth_m.shape, rows, cols)
    return out.reshape(rows * cols, AUX_SIZE)


def answer_targets(sample: Sample) -> np.ndarray:
    """``tiny_spatial.ANSWER_AUX_SIZE`` values the answer position should hold (NaN: none)."""
    out = np.full(ANSWER_AUX_SIZE, np.nan, np.float32)
    qa = sample.qa
    if qa.metric:
        out[0] = np.log(float(qa.value) / LENGTH_SCALE)
    if sample.frame is not None:
        scene = sample.frame.scene
        for slot, name in enumerate(qa.objects[:2]):
            out[1 + 3 * slot: 4 + 3 * slot] = _normalise_position(scene.centre_camera(name))
            if name != GRIPPER:
                obj = scene.find(name)
                if f"{obj.colour} {obj.shape}" in CLASSES:
                    out[7 + slot] = CLASSES.index(f"{obj.colour} {obj.shape}")
    return out


def grounding_targets(sample: Sample, aux: np.ndarray) -> np.ndarray:
    """(2, regions): how much of each region the first and second thing the question names cover
    (zeros where a slot names nothing or nothing of it is visible)."""
    out = np.zeros((2, len(aux)), np.float32)
    scene = sample.frame.scene
    for slot, name in enumerate(sample.qa.objects[:2]):
        if name == GRIPPER:
            out[slot] = aux[:, AUX_LAYOUT["gripper_cover"].start]
            continue
        obj = scene.find(name)
        key = f"{obj.colour} {obj.shape}"
        if key in CLASSES:
            out[slot] = aux[:, AUX_LAYOUT["class_cover"].start + CLASSES.index(key)]
    return out


def _table_points(scene: Scene, shape: tuple[int, int], rows: int, cols: int) -> np.ndarray:
    camera = scene.camera
    h, w = shape
    v, u = np.meshgrid((np.arange(rows) + 0.5) * h / rows - 0.5, (np.arange(cols) + 0.5) * w / cols - 0.5,
                       indexing="ij")
    rays = camera.rays(u, v)
    t = np.where(rays[..., 2] < -1e-6, -camera.position[2] / np.minimum(rays[..., 2], -1e-6), 0.0)
    points = camera.position + t[..., None] * rays
    return _normalise_position(camera.world_to_camera(points))


def make_sample(rng: np.random.Generator, size: tuple[int, int] = RENDER_SIZE,
                mix: dict[str, float] | None = None, with_frame: bool = True) -> Sample:
    scene = random_scene(rng, twin_probability=TWIN_PROBABILITY).at_resolution(*size)
    frame = render(scene)
    qa = sample_qa(scene, rng, mix)
    return Sample(frame.rgb, qa, frame if with_frame else None)


def training_batch(seed: int, step: int, batch_size: int, mix: dict[str, float] | None = None,
                   with_frames: bool = True, size: tuple[int, int] = RENDER_SIZE) -> list[Sample]:
    """The batch of ``step``: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return [make_sample(rng, size, mix, with_frames) for _ in range(batch_size)]


def prompt_text(processor: Any, question: str) -> str:
    """The user turn with the image and the question, as VLMEstimator builds it."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class Collator:
    """Samples -> model inputs with labels on the answer tokens (and the end-of-turn token) only."""

    def __init__(self, processor: Any, aux: bool = False) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.eos = self.tokenizer.eos_token
        self.aux = aux
        self.merge = int(getattr(processor.image_processor, "merge_size", 2))
        self._checked = False
        self._prompts: dict[str, str] = {}

    def prompt(self, question: str) -> str:
        text = self._prompts.get(question)
        if text is None:
            text = self._prompts[question] = prompt_text(self.processor, question)
        return text

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:

        texts = [self.prompt(s.qa.question) + s.qa.answer + self.eos + "\n" for s in samples]
        images = [s.image for s in samples]  # arrays: same pixels as PIL, much faster
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        finally:
            tok.padding_side = old_side
        ids = batch["input_ids"]
        labels = torch.full_like(ids, -100)
        length = ids.shape[1]
        for i, s in enumerate(samples):
            answer_ids = tok(s.qa.answer + self.eos, add_special_tokens=False)["input_ids"]
            n = len(answer_ids)
            # Left padding: every sequence ends at the last column with "<|im_end|>\n".
            span = slice(length - 1 - n, length - 1)
            if not self._checked and ids[i, span].tolist() != answer_ids:
                raise RuntimeError("answer tokens do not line up with the chat template's tokens; "
                                   f"{ids[i, span].tolist()} != {answer_ids}")
            labels[i, span] = torch.tensor(answer_ids)
        self._checked = True
        batch["labels"] = labels
        # The position whose hidden state predicts the first answer token, and what it should hold.
        batch["answer_positions"] = torch.tensor(
            [length - 2 - len(tok(s.qa.answer + self.eos, add_special_tokens=False)["input_ids"]) for s in samples])
        batch["answer_targets"] = torch.from_numpy(np.stack([answer_targets(s) for s in samples]))
        if self.aux:
            # One target row per merged vision token, in the vision tower's (raster) order.
            grids = batch["image_grid_thw"].tolist()
            per_image = [aux_targets(s.frame, h // self.merge, w // self.merge)
                         for s, (_, h, w) in zip(samples, grids, strict=True)]
            batch["aux_targets"] = torch.from_numpy(np.concatenate(per_image))
            if len({len(a) for a in per_image}) == 1:
                batch["grounding_targets"] = torch.from_numpy(np.stack(
                    [grounding_targets(s, a) for s, a in zip(samples, per_image, strict=True)]))
        return dict(batch)

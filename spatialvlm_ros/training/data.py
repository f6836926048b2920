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
    GRIPPER_ID,
    OBJECT_ID0,
    QA,
    RenderResult,
    Scene,
    random_scene,
    render,
    sample_qa,
)
from spatialvlm_ros.training.tiny_spatial import (
    ANSWER_AUX_SIZE,
    AUX_SIZE,
    CLASSES,
    GRID_COLS,
    GRID_ROWS,
    LENGTH_SCALE,
    POSITION_MEAN,
    POSITION_SCALE,
)

# Training frames are rendered at this size; the processor resizes them (and 640x480 camera frames)
# to the model's 112x140 input, so both look alike to the model.
RENDER_SIZE = (320, 240)


@dataclass
class Sample:
    image: np.ndarray
    qa: QA
    frame: RenderResult | None  # kept for the auxiliary targets


def _normalise_position(p: np.ndarray) -> np.ndarray:
    return (np.asarray(p, float) - POSITION_MEAN) / POSITION_SCALE


def aux_targets(frame: RenderResult, rows: int = GRID_ROWS, cols: int = GRID_COLS) -> np.ndarray:
    """What the renderer knows about each image region, in ``tiny_spatial.AUX_SIZE`` layout."""
    scene = frame.scene
    if scene.gripper is None:
        raise ValueError("auxiliary targets need a scene with a gripper")
    k = len(CLASSES)
    out = np.zeros((rows, cols, AUX_SIZE), np.float32)

    def coverage(instance_id: int) -> np.ndarray:
        mask = (frame.instance == instance_id).astype(np.float32)
        return cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_AREA)

    out[..., 0] = coverage(GRIPPER_ID)
    out[..., 1 + k: 4 + k] = _normalise_position(scene.centre_camera("gripper"))
    for i, obj in enumerate(scene.objects):
        name = f"{obj.colour} {obj.shape}"
        if name not in CLASSES:
            continue
        c = CLASSES.index(name)
        out[..., 1 + c] = coverage(OBJECT_ID0 + i)
        out[..., 4 + k + 3 * c: 7 + k + 3 * c] = _normalise_position(scene.centre_camera(obj))
        out[..., 4 + 4 * k + c] = obj.width / LENGTH_SCALE
        out[..., 4 + 5 * k + c] = scene.gripper_distance(obj) / LENGTH_SCALE
    out[..., 4 + 6 * k:] = _table_points(scene, frame.depth_m.shape, rows, cols)
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
    scene = random_scene(rng).at_resolution(*size)
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
            batch["aux_targets"] = torch.from_numpy(np.concatenate([
                aux_targets(s.frame, h // self.merge, w // self.merge) for s, (_, h, w) in zip(samples, grids, strict=True)
            ]))
        return dict(batch)

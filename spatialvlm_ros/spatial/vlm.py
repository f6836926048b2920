"""The VLM backend: any transformers image-text-to-text checkpoint answers metric questions in words.

Loaded through the standard ``AutoProcessor``/``AutoModelForImageTextToText.from_pretrained`` APIs and
prompted through the checkpoint's own chat template, so Qwen2.5-VL, LLaVA, SpaceQwen and the like work
unchanged. Importing this module imports torch: only ``build_estimator`` does that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from spatialvlm_ros.models import resolve_model_name
from spatialvlm_ros.spatial.estimator import (
    Estimate,
    Frame,
    ModelConfig,
    ModelLoadError,
    SpatialQuery,
    combine_answers,
    model_image,
    user_message,
)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "model.device is 'cuda' but torch sees no CUDA device (torch "
            f"{torch.__version__}); set model.device to 'auto' or 'cpu', or install a CUDA build")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with a slash is meant as a directory.
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_processor_and_model(config: ModelConfig, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """from_pretrained for both, with errors that say what to do."""
    try:  # "builtin:tiny-spatial" names the checkpoint shipped in the package
        name = resolve_model_name(config.name_or_path)
    except (ValueError, FileNotFoundError) as exc:
        raise ModelLoadError(str(exc)) from exc
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"{local} exists but holds no config.json: point model.name_or_path at the directory "
                "that save_pretrained / a hub download wrote (the one with config.json)")
        name = str(local)
    elif _looks_like_path(name):
        raise ModelLoadError(
            f"model.name_or_path {name!r} is not an existing directory; give a local checkpoint "
            "directory or a hub id like 'Qwen/Qwen2.5-VL-7B-Instruct'")
    kwargs = {"trust_remote_code": config.trust_remote_code}
    try:
        processor = AutoProcessor.from_pretrained(name, **kwargs)
    except OSError as exc:
        if local.exists():
            # A local directory is never a cache miss: its processor files are missing or broken.
            raise ModelLoadError(
                f"cannot load the processor from the local checkpoint {name!r}: {exc}. The directory needs "
                "the processor files beside config.json (processor_config.json or "
                "preprocessor_config.json, and the tokenizer files) that processor.save_pretrained or a "
                "full hub download writes") from exc
        if _offline() or "couldn't connect" in str(exc).lower():
            raise ModelLoadError(
                f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}). Download it once with "
                f"network access: `hf download {name}` (or huggingface_hub.snapshot_download), then "
                "run offline; or set model.name_or_path to a local checkpoint directory. (To try the "
                "package without any download, builtin:tiny-spatial is shipped in it: a tiny model of "
                "the demo camera's synthetic scenes only, not of real images.)") from exc
        raise ModelLoadError(f"cannot load the processor of {name!r}: {exc}") from exc
    except ValueError as exc:
        # transformers raises ValueError ("Unrecognized processing class", a broken tokenizer) for a
        # checkpoint whose processor it cannot build; that is a packaging problem of the checkpoint.
        raise ModelLoadError(
            f"cannot build a processor for {name!r}: {exc}. An image-text-to-text checkpoint needs its "
            "processor and tokenizer files beside config.json (as processor.save_pretrained writes them)"
        ) from exc
    except ImportError as exc:
        raise ModelLoadError(
            f"the processor of {name!r} needs a library that is missing: {exc}. "
            "Install the project's requirements (torchvision is required by Qwen2.5-VL).") from exc
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"AutoProcessor for {name!r} returned {type(processor).__name__} with no image processor: "
            "this is not an image-text-to-text checkpoint, or its processor could not be built "
            "(for Qwen2.5-VL, transformers needs torchvision installed beside torch)")
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ModelLoadError(f"the processor of {name!r} has no tokenizer")
    # Decoder-only batched generation must pad on the left, or answers start after padding.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype, **kwargs)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
        raise ModelLoadError(
            f"out of GPU memory loading {name!r}: choose a smaller checkpoint, model.dtype "
            "bfloat16/float16, or model.device cpu") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load {name!r} as an image-text-to-text model: {exc}") from exc
    try:
        model = model.to(device)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
        raise ModelLoadError(
            f"out of GPU memory placing {name!r} on {device}: choose a smaller checkpoint or "
            "model.dtype bfloat16") from exc
    model.eval()
    return processor, model


class VLMEstimator:
    """Answers SpatialQuery text with a VLM; several frames and questions per generate() call."""

    backend = "vlm"

    def __init__(self, config: ModelConfig, max_batch_size: int = 8) -> None:
        self.config = config
        self.model_name = config.name_or_path
        self.max_batch_size = max_batch_size
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        torch.manual_seed(config.seed)
        self.processor, self.model = load_processor_and_model(config, self.device, self.dtype)

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _prompt(self, question: str) -> str:
        messages = user_message(question, {"type": "image"})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _image(self, rgb: np.ndarray) -> Image.Image:
        return model_image(rgb, self.config.max_image_pixels)

    def generate_answers(self, images: Sequence[Image.Image], questions: Sequence[str],
                         samples: int = 1) -> list[list[str]]:
        """Raw answer texts, ``samples`` per (image, question) pair, from one generate() call."""
        texts = [self._prompt(q) for q in questions]
        inputs = self.processor(text=texts, images=list(images), padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        sampled = samples > 1
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": sampled,
            "num_return_sequences": samples,
        }
        if sampled:
            gen_kwargs["temperature"] = self.config.temperature
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen_kwargs)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        k = samples
        return [[t.strip() for t in decoded[i * k:(i + 1) * k]] for i in range(len(questions))]

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        results: list[Estimate] = []
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start:start + self.max_batch_size]
            # One PIL image per distinct frame object: several questions on one frame share it.
            cache: dict[int, Image.Image] = {}
            for frame, _ in chunk:
                if id(frame) not in cache:
                    cache[id(frame)] = self._image(frame.rgb)
            images = [cache[id(frame)] for frame, _ in chunk]
            try:
                answers = self.generate_answers(images, [q.text for _, q in chunk], samples)
            except (RuntimeError, ValueError) as exc:
                # An out-of-memory or a processor error on one batch must not take the node down;
                # every query of the batch is answered "unknown" with the reason.
                log.error("model failed on a batch of %d: %s", len(chunk), exc)
                results.extend(Estimate(q, None, reason=f"model failed: {exc}") for _, q in chunk)
                continue
            results.extend(combine_answers(q, a) for (_, q), a in zip(chunk, answers, strict=True))
        return results

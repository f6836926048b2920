"""The geometric backend's models through transformers: an open-vocabulary detector (zero-shot object
detection: OWLv2, OWL-ViT, Grounding DINO, ...), a metric monocular depth model (Depth Anything V2
metric, ZoeDepth, DPT, ...) and an optional promptable segmenter (SAM, SAM-HQ, SAM 2: boxes in, masks
out), each loaded by hub id or local directory with errors that say what to do.

Importing this module imports torch: only the geometric estimator does, when it builds its models.
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
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
)

from spatialvlm_ros.spatial.estimator import ModelLoadError
from spatialvlm_ros.spatial.geometric import Detection
from spatialvlm_ros.spatial.vlm import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# Candidates kept per description: enough to find another box when two descriptions pick the same one.
MAX_CANDIDATES = 5
# Detector families that score every description against every box in one pass; any other model
# gets one description per pass (Grounding DINO's phrase labels need not match the words asked).
_MULTI_QUERY_TYPES = ("owlv2", "owlvit")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _checked_name(name: str, param: str, example: str) -> str:
    """A local directory (that must hold config.json) or a hub id, refused early when it is neither."""
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"{param}: {local} exists but holds no config.json; point it at the directory that "
                "save_pretrained or a hub download wrote (the one with config.json)")
        return str(local)
    # Hub ids are "name" or "org/name"; anything else with a slash is meant as a directory.
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"{param} {name!r} is not an existing directory; give a local checkpoint "
                             f"directory or a hub id like {example!r}")
    return name


def _load(loader: Any, name: str, param: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with the failure turned into what to do about it."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
        raise ModelLoadError(f"out of GPU memory loading {param} {name!r}: choose a smaller checkpoint, "
                             "model.dtype float16, or model.device cpu") from exc
    except OSError as exc:
        if not Path(name).exists() and (_offline() or "couldn't connect" in str(exc).lower()):
            raise ModelLoadError(
                f"{param} {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}). Download it once with "
                f"network access: `hf download {name}`, then run offline; or set {param} to a local "
                "checkpoint directory.") from exc
        raise ModelLoadError(f"cannot load {param} {name!r} ({what}): {exc}") from exc
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"{param} {name!r} is not a {what} checkpoint transformers can load: {exc}") from exc
    except ImportError as exc:
        raise ModelLoadError(f"{param} {name!r} needs a library that is missing: {exc}. Install the "
                             "project's requirements (scipy and torchvision among them).") from exc


def _pil(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(rgb))


class HFDetector:
    """Open-vocabulary boxes for text descriptions, from a transformers zero-shot detection checkpoint."""

    def __init__(self, name_or_path: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, max_batch_size: int = 4) -> None:
        name = _checked_name(name_or_path, "model.detector", "google/owlv2-base-patch16-ensemble")
        self.name = name_or_path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_batch_size = max_batch_size
        kwargs = {"trust_remote_code": trust_remote_code}
        self.processor = _load(AutoProcessor, name, "model.detector", "zero-shot object detection", **kwargs)
        if getattr(self.processor, "image_processor", None) is None or not hasattr(
                self.processor, "post_process_grounded_object_detection"):
            raise ModelLoadError(
                f"model.detector {name_or_path!r}: its processor ({type(self.processor).__name__}) has no "
                "image processor or no post_process_grounded_object_detection; this is not a zero-shot "
                "object detection checkpoint (OWLv2, OWL-ViT, Grounding DINO)")
        model = _load(AutoModelForZeroShotObjectDetection, name, "model.detector",
                      "zero-shot object detection", dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.multi_query = getattr(model.config, "model_type", "") in _MULTI_QUERY_TYPES

    def close(self) -> None:
        self.model = None

    def detect(self, images: Sequence[np.ndarray],
               descriptions: Sequence[Sequence[str]]) -> list[dict[str, list[Detection]]]:
        """For each image, the best MAX_CANDIDATES boxes of each of its descriptions, best first, whatever
        their score (the caller applies the threshold, so a miss can say how close it came)."""
        # One entry per forward-pass item: (image index, the descriptions it scores).
        if self.multi_query:
            entries = [(i, list(descs)) for i, descs in enumerate(descriptions) if descs]
        else:
            entries = [(i, [d]) for i, descs in enumerate(descriptions) for d in descs]
        out: list[dict[str, list[Detection]]] = [{} for _ in images]
        for start in range(0, len(entries), self.max_batch_size):
            chunk = entries[start:start + self.max_batch_size]
            batch_images = [images[i] for i, _ in chunk]
            for (i, _), found in zip(chunk, self._run(batch_images, [d for _, d in chunk]), strict=True):
                out[i].update(found)
        return out

    def _run(self, images: list[np.ndarray], texts: list[list[str]]) -> list[dict[str, list[Detection]]]:
        sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        inputs = self.processor(images=[_pil(im) for im in images], text=texts, return_tensors="pt",
                                truncation=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        results: list[dict[str, list[Detection]]] = []
        if self.multi_query:
            # Boxes once (the processor knows how its model pads and scales them), scores per description.
            boxes = self.processor.post_process_grounded_object_detection(
                outputs, threshold=-1.0, target_sizes=sizes)
            logits = outputs.logits.float()
            for b, descs in enumerate(texts):
                all_boxes = boxes[b]["boxes"].float().cpu().numpy()
                found = {}
                for q, desc in enumerate(descs):
                    scores = torch.sigmoid(logits[b, :, q]).cpu().numpy()
                    found[desc] = _candidates(all_boxes, scores, sizes[b])
                results.append(found)
            return results
        # (Grounding DINO reads its phrase tokens from the outputs; the box belongs to the one phrase.)
        processed = self.processor.post_process_grounded_object_detection(
            outputs, threshold=0.0, target_sizes=sizes)
        for b, descs in enumerate(texts):
            r = processed[b]
            results.append({descs[0]: _candidates(r["boxes"].float().cpu().numpy(),
                                                  r["scores"].float().cpu().numpy(), sizes[b])})
        return results


def _candidates(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int]) -> list[Detection]:
    h, w = size
    order = np.argsort(-scores)
    found: list[Detection] = []
    for k in order:
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
        y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
        if x1 - x0 < 2 or y1 - y0 < 2 or not np.isfinite(scores[k]):
            continue  # off the image (OWLv2 also predicts into its square padding) or degenerate
        found.append(Detection((x0, y0, x1, y1), float(scores[k])))
        if len(found) == MAX_CANDIDATES:
            break
    return found


class HFDepthModel:
    """Metric depth (metres along the optical axis) for colour images, from a transformers checkpoint."""

    def __init__(self, name_or_path: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, max_batch_size: int = 4) -> None:
        name = _checked_name(name_or_path, "model.depth_model",
                             "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf")
        self.name = name_or_path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_batch_size = max_batch_size
        kwargs = {"trust_remote_code": trust_remote_code}
        self.processor = _load(AutoImageProcessor, name, "model.depth_model", "depth estimation", **kwargs)
        if not hasattr(self.processor, "post_process_depth_estimation"):
            raise ModelLoadError(
                f"model.depth_model {name_or_path!r}: its image processor ({type(self.processor).__name__}) "
                "has no post_process_depth_estimation; this is not a depth estimation checkpoint")
        model = _load(AutoModelForDepthEstimation, name, "model.depth_model", "depth estimation",
                      dtype=self.dtype, **kwargs)
        if getattr(model.config, "depth_estimation_type", None) == "relative":
            raise ModelLoadError(
                f"model.depth_model {name_or_path!r} predicts relative depth, which has no scale; the "
                "geometric backend needs metres: use a metric checkpoint such as "
                "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf (indoor) or "
                "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf")
        self.model = model.to(self.device).eval()

    def close(self) -> None:
        self.model = None

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) float32 metres for each (H, W, 3) image, at the image's own size."""
        out: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault((int(im.shape[0]), int(im.shape[1])), []).append(i)
        for size, indices in by_size.items():  # one batch per image size: the processor stacks them
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start:start + self.max_batch_size]
                inputs = self.processor(images=[_pil(images[i]) for i in chunk], return_tensors="pt")
                inputs = inputs.to(self.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
                with torch.inference_mode():
                    outputs = self.model(**inputs)
                outputs["predicted_depth"] = outputs.predicted_depth.float()
                processed = self.processor.post_process_depth_estimation(outputs, target_sizes=[size] * len(chunk))
                for i, r in zip(chunk, processed, strict=True):
                    out[i] = r["predicted_depth"].cpu().numpy().astype(np.float32).reshape(size)
        return [d for d in out if d is not None]


# Promptable segmenters whose forward pass takes box prompts (input_boxes) and returns pred_masks.
SEGMENTER_TYPES = ("sam", "sam_hq", "sam2", "edgetam")


class HFSegmenter:
    """Masks for detection boxes from a transformers promptable segmenter (SAM family), one mask per box."""

    def __init__(self, name_or_path: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False) -> None:
        name = _checked_name(name_or_path, "model.segmenter", "facebook/sam-vit-base")
        self.name = name_or_path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        kwargs = {"trust_remote_code": trust_remote_code}
        what = "promptable segmentation (SAM, SAM-HQ, SAM 2)"
        self.processor = _load(AutoProcessor, name, "model.segmenter", what, **kwargs)
        if not hasattr(self.processor, "post_process_masks"):
            raise ModelLoadError(
                f"model.segmenter {name_or_path!r}: its processor ({type(self.processor).__name__}) has no "
                "post_process_masks; this is not a promptable segmentation checkpoint (SAM, SAM-HQ, SAM 2). "
                "Set model.segmenter to none to segment by depth alone.")
        model = _load(AutoModel, name, "model.segmenter", what, dtype=self.dtype, **kwargs)
        model_type = getattr(model.config, "model_type", "")
        if model_type not in SEGMENTER_TYPES:
            raise ModelLoadError(
                f"model.segmenter {name_or_path!r} is a {model_type or type(model).__name__} checkpoint, not a "
                f"promptable segmenter; accepted families: {', '.join(SEGMENTER_TYPES)} (e.g. "
                "facebook/sam-vit-base), or none")
        self.model = model.to(self.device).eval()

    def close(self) -> None:
        self.model = None

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[Sequence[tuple[float, float, float, float]]]) -> list[list[np.ndarray]]:
        """For each image, one (H, W) bool mask per box (x0, y0, x1, y1 pixels), in order."""
        out: list[list[np.ndarray]] = []
        for image, image_boxes in zip(images, boxes, strict=True):
            if not image_boxes:
                out.append([])
                continue
            inputs = self.processor(images=_pil(image), input_boxes=[[[float(v) for v in b] for b in image_boxes]],
                                    return_tensors="pt").to(self.device)
            for key in ("pixel_values", "input_boxes"):  # the sizes stay integers
                if key in inputs and inputs[key].is_floating_point():
                    inputs[key] = inputs[key].to(self.dtype)
            with torch.inference_mode():
                outputs = self.model(**inputs, multimask_output=False)
            sizes = [inputs[k].cpu() for k in ("original_sizes", "reshaped_input_sizes") if k in inputs]
            masks = self.processor.post_process_masks(outputs.pred_masks.float().cpu(), *sizes)[0]
            # (boxes, 1, H, W) -> one (H, W) mask per box
            out.append([np.asarray(m[0].numpy(), bool) for m in masks])
        return out

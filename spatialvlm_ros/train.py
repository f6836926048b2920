"""spatialvlm_train: train a spatial VLM on synthesized tabletop QA (SpatialVLM's recipe), then evaluate it.

Two modes:

* from scratch (default): the tiny Qwen2.5-VL-architecture model of ``training.tiny_spatial``, with the
  training-only dense auxiliary loss on its vision tokens (``--aux-weight``; 0 trains on answers only);
* fine-tuning (``--init MODEL``): an existing image-text-to-text checkpoint (hub id or directory), with
  LoRA adapters on the language model (``--lora-rank``, needs ``peft``) and optionally the whole vision
  encoder unfrozen (``--unfreeze-vision``); meant for real models on a GPU.

Batches are rendered on the fly and are a pure function of (seed, step): a run is reproducible, and
``--resume`` continues from the training-state file (optimizer, step, weights; kept beside, not inside,
the model folder) exactly where it stopped. The model folder holds a plain transformers checkpoint
(LoRA merged, auxiliary head dropped) and ``metrics.json`` from the evaluation on held-out scenes.

    spatialvlm_train spatialvlm_ros/models/tiny_spatial_qwen      # the shipped model (about 21 min, 2 cores)
    spatialvlm_train out/qwen7b-spatial --init Qwen/Qwen2.5-VL-7B-Instruct --lora-rank 16 \\
        --unfreeze-vision --steps 2000 --batch-size 8 --lr 1e-4 --device cuda

With ``--data DIR [DIR ...]`` the questions come from datasets written by ``spatialvlm_synthesize``
(the robot's own episodes) instead of the renderer, optionally mixed with rendered scenes
(``--synthetic-share``); whole episodes are held out (``--heldout-share`` / ``--heldout``) and the
model is evaluated on them before and after training with SpatialVLM's measures:

    spatialvlm_train out/tiny-own --init builtin:tiny-spatial --data ~/spatial_vqa --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEFAULTS = {"steps": 2800, "batch_size": 32, "lr": 2e-3, "warmup": 60, "weight_decay": 0.01}
FINETUNE_DEFAULTS = {"steps": 1000, "batch_size": 8, "lr": 1e-4, "warmup": 50, "weight_decay": 0.0}
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


def parse_mix(text: str) -> dict[str, float]:
    from spatialvlm_ros.spatial.synth import QA_KINDS

    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in QA_KINDS:
            raise argparse.ArgumentTypeError(f"unknown question kind {name!r}; accepted: {', '.join(QA_KINDS)}")
        try:
            mix[name] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight of {name!r} must be a number, got {weight!r}") from exc
    if not mix or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the mix needs at least one positive weight")
    return mix


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from exc
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError("size must be at least 32x32")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatialvlm_train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("out_dir", type=Path, help="model folder to write (config, weights, processor, metrics.json)")
    p.add_argument("--init", default="scratch",
                   help="'scratch' (the tiny model) or a checkpoint to fine-tune (hub id or directory)")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULTS['steps']}; fine-tuning "
                   f"{FINETUNE_DEFAULTS['steps']})")
    p.add_argument("--batch-size", type=int, help="scenes per step (default 32; fine-tuning 8)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3; fine-tuning 1e-4)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps, then cosine decay to 10%%")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and every batch (default 0)")
    p.add_argument("--aux-weight", type=float, default=None,
                   help="weight of the dense auxiliary loss on the vision tokens (default 1 from scratch, "
                   "0 when fine-tuning; 0 disables it)")
    p.add_argument("--answer-aux-weight", type=float, default=None,
                   help="weight of the training-only regression of the answer (log distance, centres of "
                   "the named things) from the language model's state before the answer (default 1 from "
                   "scratch, 0 when fine-tuning)")
    p.add_argument("--grounding-weight", type=float, default=None,
                   help="weight of the training-only supervision of where the language model looks (the "
                   "named things' image tokens; needs the auxiliary loss; default 1 from scratch, 0 when "
                   "fine-tuning)")
    p.add_argument("--mix", type=parse_mix, default=None,
                   help="question kinds and weights, e.g. gripper_distance=0.6,object_distance=0.1,"
                   "gap=0.07,width=0.07,left_right=0.08,closer=0.08 (the default)")
    p.add_argument("--render-size", type=parse_size, default=None,
                   help="training frames are rendered at WxH (default 224x168 from scratch: the processor "
                   "shrinks them to 168x140 anyway; 640x480 fine-tuning)")
    p.add_argument("--lora-rank", type=int, default=0, help="fine-tuning: LoRA rank on the language model (0: "
                   "train the language model fully)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--unfreeze-vision", action="store_true",
                   help="fine-tuning: train the vision encoder too (SpatialVLM found this matters); "
                   "the projector (merger) is always trained")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory (large models)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="weights of frozen parts: auto is bfloat16 on CUDA, float32 on CPU; trained "
                   "parameters stay float32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--state", type=Path, default=None,
                   help="training-state file (default: OUT_DIR's sibling OUT_DIR.train_state.pt)")
    p.add_argument("--resume", action="store_true", help="continue from the training-state file")
    p.add_argument("--save-every", type=int, default=100, help="write the training state every N steps")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (saving the training state) after N steps in this session; --resume continues")
    p.add_argument("--eval-scenes", type=int, default=200, help="held-out scenes for the reward question")
    p.add_argument("--eval-per-kind", type=int, default=40, help="held-out questions of each other kind")
    p.add_argument("--eval-trajectories", type=int, default=8)
    p.add_argument("--eval-frames", type=int, default=12)
    p.add_argument("--eval-only", action="store_true", help="evaluate OUT_DIR (already trained) and write metrics")
    p.add_argument("--no-eval", action="store_true", help="train and save, do not evaluate")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    d = p.add_argument_group("training on synthesized datasets (spatialvlm_synthesize)")
    d.add_argument("--data", nargs="+", type=Path, default=None, metavar="DIR",
                   help="dataset directories to train on (needs --init: fine-tuning)")
    d.add_argument("--synthetic-share", type=float, default=0.0, metavar="X",
                   help="share of each batch drawn from the renderer's scenes (the original training "
                   "mix, against forgetting; default 0)")
    d.add_argument("--heldout-share", type=float, default=0.25, metavar="X",
                   help="share of the sources (episodes) held out for evaluation, chosen by a hash of "
                   "their names (default 0.25; never split by frame)")
    d.add_argument("--heldout", nargs="+", default=(), metavar="SOURCE",
                   help="hold out exactly these sources (episode directory names) instead")
    return p


def default_state_path(out_dir: Path) -> Path:
    return out_dir.parent / (out_dir.name + ".train_state.pt")


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _find_visual(model: Any) -> Any:
    for name, module in model.named_modules():
        if name.endswith("visual") and hasattr(module, "merger"):
            return module
    raise ValueError("no Qwen-VL style vision tower ('visual' with a 'merger') found: the auxiliary loss "
                     "needs one; use --aux-weight 0")


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.torch = torch
        self.scratch = args.init == "scratch"
        defaults = DEFAULTS if self.scratch else FINETUNE_DEFAULTS
        for key, value in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.aux_weight is None:
            args.aux_weight = 1.0 if self.scratch else 0.0
        if args.answer_aux_weight is None:
            args.answer_aux_weight = 1.0 if self.scratch else 0.0
        if args.grounding_weight is None:
            args.grounding_weight = 1.0 if self.scratch and args.aux_weight > 0 else 0.0
        if args.grounding_weight > 0 and args.aux_weight <= 0:
            raise SystemExit("--grounding-weight needs the auxiliary loss (--aux-weight > 0): its targets "
                             "come from the same region coverage")
        if args.render_size is None:
            args.render_size = (224, 168) if self.scratch else (640, 480)
        self.data_split: dict[str, Any] | None = None
        self.vqa_batches = None
        if args.data:
            if self.scratch:
                raise SystemExit("--data fine-tunes an existing checkpoint: give --init MODEL (for example "
                                 "builtin:tiny-spatial)")
            if max(args.aux_weight, args.answer_aux_weight, args.grounding_weight) > 0:
                raise SystemExit("--data rows carry no rendered frames: the auxiliary losses need "
                                 "--aux-weight 0 --answer-aux-weight 0 --grounding-weight 0")
            if not 0 <= args.synthetic_share <= 1 or not 0 <= args.heldout_share < 1:
                raise SystemExit("--synthetic-share must be within [0, 1] and --heldout-share within [0, 1)")
            from spatialvlm_ros.training.vqa_data import VQABatches, load_vqa, split_by_source

            try:
                data = load_vqa(args.data)
                train_rows, held_rows, held = split_by_source(data, args.heldout_share, args.heldout)
                self.vqa_batches = VQABatches(train_rows, args.seed, args.synthetic_share, args.render_size, args.mix)
            except (FileNotFoundError, ValueError) as exc:
                raise SystemExit(f"--data: {exc}") from exc
            self.heldout_rows = held_rows
            self.data_split = {"sources": data.sources(), "heldout_sources": held, "train_rows": len(train_rows),
                               "heldout_rows": len(held_rows)}
        if args.steps < 1 or args.batch_size < 1:
            raise SystemExit("--steps and --batch-size must be at least 1")
        if args.lora_rank and self.scratch:
            raise SystemExit("--lora-rank is for fine-tuning an existing checkpoint (--init MODEL)")
        if args.unfreeze_vision and self.scratch:
            raise SystemExit("--unfreeze-vision is for fine-tuning: from scratch everything is trained")
        self.device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
            "cpu" if args.device == "auto" else args.device)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda but torch sees no CUDA device")
        self.state_path = args.state or default_state_path(args.out_dir)

    # -- model ---------------------------------------------------------------------------------------

    def build(self) -> None:
        torch = self.torch
        args = self.args
        torch.manual_seed(args.seed)
        if self.scratch:
            from spatialvlm_ros.training.tiny_spatial import build_tiny_spatial

            self.processor, model = build_tiny_spatial(args.seed)
        else:
            self.processor, model = self._load_pretrained()
        self.model = model.to(self.device)
        if args.grounding_weight > 0:
            # The grounding loss reads attention probabilities: eager attention returns them (the vision
            # tower keeps its batched fast path below).
            self.model.set_attn_implementation("eager")
        from spatialvlm_ros.training.fast_attention import patch_vision_attention

        patch_vision_attention(self.model)
        self.head = None
        if args.aux_weight > 0:
            from spatialvlm_ros.training.tiny_spatial import AuxHead

            visual = _find_visual(self.model)
            out_dim = visual.merger.mlp[-1].out_features
            self.head = AuxHead(out_dim).to(self.device)
            self._captured: dict[str, Any] = {}
            visual.register_forward_hook(lambda _m, _i, out: self._captured.__setitem__("tokens", out.pooler_output))
        self.answer_head = None
        if args.answer_aux_weight > 0:
            from spatialvlm_ros.training.tiny_spatial import AnswerHead

            self.answer_head = AnswerHead(self.model.config.get_text_config().hidden_size).to(self.device)
        if args.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            if hasattr(self.model, "enable_input_require_grads"):
                self.model.enable_input_require_grads()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        for head in (self.head, self.answer_head):
            if head is not None:
                self.params += list(head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=args.lr, betas=(0.9, 0.98),
                                           weight_decay=args.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(args.warmup, args.steps))
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[tuple[float, float | None]] = []  # (answer loss, aux loss) per step
        self.last_losses: dict[str, float] = {}

    def _load_pretrained(self) -> tuple[Any, Any]:
        torch = self.torch
        args = self.args
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from spatialvlm_ros.models import resolve_model_name

        args.init = resolve_model_name(args.init)
        processor = AutoProcessor.from_pretrained(args.init)
        if getattr(processor, "image_processor", None) is None:
            raise SystemExit(f"{args.init!r} has no image processor: not an image-text-to-text checkpoint")
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            args.dtype, torch.bfloat16 if self.device == "cuda" else torch.float32)
        model = AutoModelForImageTextToText.from_pretrained(args.init, dtype=dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        if args.lora_rank > 0:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as exc:
                raise SystemExit("--lora-rank needs peft: pip install peft") from exc
            config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha or 2 * args.lora_rank,
                                lora_dropout=args.lora_dropout, target_modules=LORA_TARGETS, bias="none")
            model = get_peft_model(model, config)
        else:
            for name, p in model.named_parameters():
                if "language_model" in name or "lm_head" in name:
                    p.requires_grad_(True)
        visual = _find_visual(model)
        trainable = visual.parameters() if args.unfreeze_vision else visual.merger.parameters()
        for p in trainable:
            p.requires_grad_(True)
        # Trained parameters in float32 (Adam on bfloat16 weights loses small updates); autocast computes.
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        return processor, model

    def count(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.model.parameters())
        trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return total, trained

    # -- state ---------------------------------------------------------------------------------------

    def save_state(self) -> None:
        torch = self.torch
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        model_state = {k: v for k, v in self.model.state_dict().items() if self.scratch or k in trainable}
        state = {
            "step": self.step,
            "args": {k: _json_safe(v) for k, v in vars(self.args).items()},
            "model": model_state,
            "head": self.head.state_dict() if self.head is not None else None,
            "answer_head": self.answer_head.state_dict() if self.answer_head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": self.elapsed_s,
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self) -> None:
        torch = self.torch
        state = torch.load(self.state_path, map_location=self.device, weights_only=False)
        for key in ("init", "seed", "batch_size", "steps", "aux_weight", "answer_aux_weight", "grounding_weight",
                    "lora_rank", "unfreeze_vision", "data", "synthetic_share", "heldout_share"):
            saved = state["args"].get(key)
            if saved != _json_safe(getattr(self.args, key)):
                raise SystemExit(f"cannot resume: --{key.replace('_', '-')} was {saved!r} in the saved run, "
                                 f"now {getattr(self.args, key)!r}")
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        if unexpected or (self.scratch and missing):
            raise SystemExit(f"cannot resume: the state does not fit the model ({missing[:3]}, {unexpected[:3]})")
        if self.head is not None and state["head"] is not None:
            self.head.load_state_dict(state["head"])
        if self.answer_head is not None and state.get("answer_head") is not None:
            self.answer_head.load_state_dict(state["answer_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))

    # -- training ------------------------------------------------------------------------------------

    def _batch(self, step: int) -> dict[str, Any]:
        if self.vqa_batches is not None:
            return self.collator(self.vqa_batches.batch(step, self.args.batch_size))
        from spatialvlm_ros.training.data import training_batch

        samples = training_batch(self.args.seed, step, self.args.batch_size, self.args.mix,
                                 with_frames=self.head is not None, size=self.args.render_size)
        return self.collator(samples)

    def train(self) -> bool:
        """Train to --steps (or --stop-after more steps); True when all steps are done."""
        torch = self.torch
        from tqdm import tqdm

        from spatialvlm_ros.training.data import Collator

        args = self.args
        self.collator = Collator(self.processor, aux=self.head is not None)
        self.model.train()
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device == "cuda"
                    and args.dtype != "float32" else _nullcontext())
        start_time = time.monotonic() - self.elapsed_s
        bar = tqdm(total=args.steps, initial=self.step, desc="train", unit="step", disable=args.quiet,
                   dynamic_ncols=True)
        ema: dict[str, float] = {}
        end = args.steps if args.stop_after is None else min(args.steps, self.step + args.stop_after)
        with ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(self._batch, self.step) if self.step < end else None
            while self.step < end:
                batch = upcoming.result()
                upcoming = pool.submit(self._batch, self.step + 1) if self.step + 1 < end else None
                aux_target = batch.pop("aux_targets", None)
                answer_pos = batch.pop("answer_positions")
                answer_target = batch.pop("answer_targets")
                grounding_target = batch.pop("grounding_targets", None)
                batch = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
                grounding = args.grounding_weight > 0 and grounding_target is not None
                with autocast:
                    out = self.model(**batch, output_hidden_states=self.answer_head is not None,
                                     output_attentions=grounding)
                    loss = out.loss
                    aux_value = answer_value = grounding_value = None
                    rows = torch.arange(batch["input_ids"].shape[0], device=self.device)
                    pos = answer_pos.to(self.device)
                    if self.answer_head is not None:
                        from spatialvlm_ros.training.tiny_spatial import GROUNDING_LAYER, answer_aux_loss

                        last = out.hidden_states[-1][rows, pos].float()
                        early = out.hidden_states[GROUNDING_LAYER][rows, pos].float()
                        answer_value = answer_aux_loss(self.answer_head(last, early), answer_target.to(self.device))
                        loss = loss + args.answer_aux_weight * answer_value
                    if grounding:
                        from spatialvlm_ros.training.tiny_spatial import GROUNDING_LAYER, grounding_loss

                        attention = out.attentions[GROUNDING_LAYER][rows, :, pos].float()  # (B, heads, T)
                        image_mask = batch["input_ids"] == self.model.config.image_token_id
                        grounding_value = grounding_loss(attention, image_mask, grounding_target.to(self.device))
                        loss = loss + args.grounding_weight * grounding_value
                    if self.head is not None:
                        from spatialvlm_ros.training.tiny_spatial import aux_loss

                        tokens = self._captured.pop("tokens").float()
                        aux_value = aux_loss(self.head(tokens), aux_target.to(self.device))
                        loss = loss + args.aux_weight * aux_value
                if not torch.isfinite(loss):
                    raise SystemExit(f"loss is {loss.item()} at step {self.step}: lower --lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                self.elapsed_s = time.monotonic() - start_time
                for key, value in (("loss", out.loss.item()),
                                   ("aux", aux_value.item() if aux_value is not None else None),
                                   ("ans", answer_value.item() if answer_value is not None else None),
                                   ("grd", grounding_value.item() if grounding_value is not None else None)):
                    if value is not None:
                        ema[key] = value if key not in ema else 0.95 * ema[key] + 0.05 * value
                self.last_losses = dict(ema)
                self.history.append((out.loss.item(), aux_value.item() if aux_value is not None else None))
                bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()} | {"lr": f"{self.scheduler.get_last_lr()[0]:.1e}"},
                                refresh=False)
                bar.update(1)
                if args.quiet and (self.step % 50 == 0 or self.step == args.steps):
                    print(f"step {self.step}/{args.steps} " + " ".join(f"{k} {v:.3f}" for k, v in ema.items())
                          + f" ({self.elapsed_s:.0f} s)", flush=True)
                if self.step % args.save_every == 0 or self.step == end:
                    self.save_state()
        bar.close()
        return self.step >= args.steps

    def save_model(self) -> Path:
        from spatialvlm_ros.training.tiny_spatial import save_pretrained

        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.eval()
        if self.args.grounding_weight > 0:
            model.set_attn_implementation("sdpa")  # eager was for training only
        dtype = self.torch.float32 if self.device == "cpu" else self.torch.bfloat16
        for p in model.parameters():
            p.data = p.data.to(dtype)
        return save_pretrained(self.processor, model, self.args.out_dir)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def run_evaluation(args: argparse.Namespace, model_dir: Path, device: str) -> dict[str, Any]:
    from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator
    from spatialvlm_ros.training.evaluate import evaluate

    estimator = build_estimator(ModelConfig(name_or_path=str(model_dir), device=device, max_new_tokens=16))
    estimator.max_batch_size = 32
    try:
        return evaluate(estimator, args.eval_scenes, args.eval_per_kind, args.eval_trajectories, args.eval_frames,
                        show_progress=not args.quiet)
    finally:
        estimator.close()


def run_data_evaluation(trainer: Trainer, model_dir: Path) -> dict[str, Any]:
    """The held-out episodes of --data, answered by the starting checkpoint and by the trained one."""
    from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator
    from spatialvlm_ros.training.vqa_eval import evaluate_rows

    rows = getattr(trainer, "heldout_rows", [])
    out: dict[str, Any] = {"data_split": trainer.data_split}
    if not rows:
        print("no held-out episodes (one source only, or --heldout-share 0): nothing evaluated", flush=True)
        return out
    for name, path in (("before", trainer.args.init), ("after", str(model_dir))):
        estimator = build_estimator(ModelConfig(name_or_path=path, device=trainer.device, max_new_tokens=24))
        estimator.max_batch_size = 32
        try:
            out[name] = evaluate_rows(estimator, rows, show_progress=not trainer.args.quiet)
        finally:
            estimator.close()
    return out


def print_data_report(metrics: dict[str, Any]) -> None:
    from spatialvlm_ros.training.vqa_eval import format_report

    split = metrics.get("data_split") or {}
    print(f"held-out episodes ({', '.join(split.get('heldout_sources', [])) or 'none'}; "
          f"{split.get('heldout_rows', 0)} questions), truth = the synthesized values:")
    for name in ("before", "after"):
        if name in metrics:
            print("  " + format_report(name, metrics[name]))


def print_report(metrics: dict[str, Any]) -> None:
    held = metrics["heldout"]
    print("held-out questions (truth from the scene definition; answers parsed with parse_distance):")
    for kind, m in held.items():
        if "accuracy" in m:
            print(f"  {kind:<17} n={m['n']:<4} accuracy {m['accuracy']:.1%}")
        else:
            # Spearman is undefined (NaN) when every answer, or every truth, is the same number.
            rho = f"{m['spearman']:.3f}" if math.isfinite(m["spearman"]) else "undefined (all answers, or all truths, equal)"
            print(f"  {kind:<17} n={m['n']:<4} numeric {m['share_numeric']:.1%}  within [0.5x,2x] "
                  f"{m['within_2x']:.1%}  within [0.9x,1.1x] {m['within_10pct']:.1%}  median rel. error "
                  f"{m['median_rel_error']:.1%}  Spearman {rho}")
    t = metrics["trajectories"]
    print(f"approach trajectories: {t['n']} x {t['frames']} frames, Spearman mean {t['spearman_mean']:.3f} "
          f"min {t['spearman_min']:.3f}, share >= 0.9: {t['share_monotone_0.9']:.0%}; pooled within "
          f"[0.5x,2x] {t['pooled']['within_2x']:.1%}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = Trainer(args)
    out_dir: Path = args.out_dir
    info: dict[str, Any] = {}
    if not args.eval_only:
        trainer.build()
        if args.resume:
            if not trainer.state_path.is_file():
                raise SystemExit(f"--resume: no training state at {trainer.state_path}")
            trainer.load_state()
            print(f"resumed from {trainer.state_path} at step {trainer.step}", flush=True)
        total, trained = trainer.count()
        print(f"training {args.init} ({total / 1e6:.2f}M parameters, {trained / 1e6:.2f}M trained) for "
              f"{args.steps} steps of {args.batch_size} scenes on {trainer.device} "
              f"({torch.get_num_threads()} threads); aux weight {args.aux_weight}", flush=True)
        if not trainer.train():
            print(f"stopped at step {trainer.step} of {args.steps}; training state in {trainer.state_path} "
                  "(continue with --resume)", flush=True)
            return 0
        trainer.save_model()
        info = {"train_time_s": round(trainer.elapsed_s, 1), "final_losses": trainer.last_losses,
                "parameters": total, "trained_parameters": trained}
        print(f"saved {out_dir} after {trainer.elapsed_s / 60:.1f} min of training", flush=True)
    elif not (out_dir / "config.json").is_file():
        raise SystemExit(f"--eval-only: {out_dir} holds no checkpoint")
    if args.no_eval:
        return 0
    t0 = time.monotonic()
    if args.data:
        metrics = run_data_evaluation(trainer, out_dir)
    else:
        metrics = run_evaluation(args, out_dir, trainer.device)
    previous = {}
    if args.eval_only and (out_dir / "metrics.json").is_file():
        previous = json.loads((out_dir / "metrics.json").read_text()).get("training", {})
    report = {
        "model": str(out_dir),
        "command": "spatialvlm_train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "training": info or previous,
        "settings": {k: _json_safe(v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "device": trainer.device},
        "eval_time_s": round(time.monotonic() - t0, 1),
        **metrics,
    }
    (out_dir / "metrics.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    if args.data:
        print_data_report(metrics)
    else:
        print_report(metrics)
    print(f"metrics written to {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tiny spatial VLM: a Qwen2.5-VL-architecture model of ~2.5M parameters, its tokenizer and processor,
and the training-only dense auxiliary head.

The model is a plain ``Qwen2_5_VLForConditionalGeneration`` (3 text layers of width 192, 3 vision layers
of width 128). Images are resized by the processor to 112x140 px for the 4:3 camera (8x10 patches of
14 px, merged 2x2 into 20 image tokens). The tokenizer is a byte-level BPE trained here on the QA
templates, with every digit its own token so numbers are spelled digit by digit.

The auxiliary head reads the merged vision tokens (one per 28x28 px region of the model's input) and
predicts what the renderer knows about each region: which objects and whether the gripper cover it,
their 3D centres, the object's width and distance to the gripper, and the table point under the region.
It exists only during training: the saved checkpoint is the transformers model alone.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.synth import COLOURS, SHAPES
from spatialvlm_ros.spatial.synth import qa as qa_templates

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# ChatML with one image before the text, as Qwen2.5-VL's own template lays it out.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The processor turns any 4:3 image into 112x140 px (smart_resize keeps the aspect within a 28 px grid).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 168
GRID_ROWS, GRID_COLS = 4, 5  # merged-token regions of a 4:3 image

# Object classes the auxiliary head knows: every (colour, shape) pair.
CLASSES = [f"{c} {s}" for c, s in itertools.product(COLOURS, SHAPES)]


def tokenizer_corpus() -> list[str]:
    """Texts the BPE is trained on: every question template and object name, answers across the range."""
    objects = [f"the {c}" for c in CLASSES] + ["the orange tea bottle", "the bottle", "the table", "the box"]
    texts: list[str] = []
    templates = (qa_templates.DISTANCE_TEMPLATES + qa_templates.GAP_TEMPLATES + qa_templates.WIDTH_TEMPLATES
                 + qa_templates.LEFT_TEMPLATES)
    for template, a, b in itertools.product(templates, qa_templates.GRIPPER_PHRASES + tuple(objects[:4]),
                                            objects):
        texts.append(template.format(a=a, b=b))
    for a, b in itertools.product(objects, objects):
        texts.append(qa_templates.CLOSER_TEMPLATE.format(g="the robot gripper", a=a, b=b))
        texts.append(a[:1].upper() + a[1:] + ".")
    for mm in range(1, 3000, 3):
        texts.append(format_distance(mm / 1000))
    texts += ["Yes.", "No.", "I don't know.", "The gripper is about 0.35 m from the bottle.",
              "roughly 2 metres, about half a metre, 20 cm, 1.5 m, 40 centimeters, 3 feet, 12 inches",
              "Can the robot pass between the sofa and the table? The gap is 0.8 m wide."]
    return texts


def build_tokenizer(vocab_size: int = 640):
    """Byte-level BPE (any text encodes) with digits split one per token, plus Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)


def build_config(tokenizer, text_layers: int = 3, text_hidden: int = 192, vision_layers: int = 3,
                 vision_hidden: int = 128) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
    heads = text_hidden // 32
    head_dim = text_hidden // heads
    quarter = head_dim // 2 // 4  # mrope_section sums to head_dim / 2 (temporal, height, width)
    mrope = [head_dim // 2 - 3 * quarter, (3 * quarter) // 2 + (3 * quarter) % 2, (3 * quarter) // 2]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=text_hidden * 8 // 3,
            num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 1e4},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=vision_layers, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
            num_heads=vision_hidden // 32, out_hidden_size=text_hidden, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, fullatt_block_indexes=list(range(vision_layers)), window_size=112,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_spatial(seed: int = 0) -> tuple[Any, Any]:
    """(processor, model) with fresh random weights, ready to train."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    return processor, model


# ---------------------------------------------------------------------------------- auxiliary head

# Per-region targets, in this order along the last axis (K = len(CLASSES)):
#   [0]                 gripper coverage (BCE)
#   [1 : 1+K]           coverage of each object class (BCE)
#   [1+K : 4+K]         gripper TCP, camera frame (regression, where the gripper covers the region)
#   [4+K : 4+4K]        each class's centre, camera frame (where the class covers the region)
#   [4+4K : 4+5K]       each class's width
#   [4+5K : 4+6K]       each class's distance to the gripper
#   [4+6K : 7+6K]       the table point under the region centre, camera frame
AUX_SIZE = 7 + 6 * len(CLASSES)
POSITION_MEAN = (0.0, 0.05, 0.62)  # camera frame, metres: roughly the middle of the workspace
POSITION_SCALE = 0.25
LENGTH_SCALE = 0.3


class AuxHead(nn.Module):
    """Two-layer MLP from each merged vision token to its region's ``AUX_SIZE`` targets."""

    def __init__(self, hidden: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, AUX_SIZE))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of the auxiliary head: BCE on coverage, smooth-L1 on geometry weighted by coverage."""
    k = len(CLASSES)
    cover_t = target[:, : 1 + k]
    loss = nn.functional.binary_cross_entropy_with_logits(pred[:, : 1 + k], cover_t)
    grip_w = cover_t[:, :1]
    class_w = cover_t[:, 1:]

    def weighted(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        err = nn.functional.smooth_l1_loss(p, t, reduction="none", beta=0.1)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    g = slice(1 + k, 4 + k)
    loss = loss + weighted(pred[:, g], target[:, g], grip_w.expand(-1, 3))
    centres_p = pred[:, 4 + k: 4 + 4 * k].reshape(-1, k, 3)
    centres_t = target[:, 4 + k: 4 + 4 * k].reshape(-1, k, 3)
    loss = loss + weighted(centres_p, centres_t, class_w[:, :, None].expand(-1, -1, 3))
    for start in (4 + 4 * k, 4 + 5 * k):
        loss = loss + weighted(pred[:, start:start + k], target[:, start:start + k], class_w)
    table = slice(4 + 6 * k, 7 + 6 * k)
    loss = loss + nn.functional.smooth_l1_loss(pred[:, table], target[:, table], beta=0.1)
    return loss


# ---------------------------------------------------------------------------------- answer head

# What the language model's last hidden state before the answer is trained to hold (training only):
#   [0]    log(value / LENGTH_SCALE) of a metric answer
#   [1:4]  camera-frame centre of the first thing named (the gripper's TCP for the reward question)
#   [4:7]  centre of the second thing named (an object)
# NaN where a question has no such quantity. A smooth regression target teaches the attention to find
# the named objects long before the digit tokens' cross-entropy alone would.
ANSWER_AUX_SIZE = 7


class AnswerHead(nn.Module):
    """Linear read-out of the answer-position hidden state (so the answer must be linearly present)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, ANSWER_AUX_SIZE)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def answer_aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = torch.isfinite(target)
    if not valid.any():
        return pred.sum() * 0.0
    return nn.functional.smooth_l1_loss(pred[valid], target[valid], beta=0.1)


def save_pretrained(processor: Any, model: Any, out_dir: str | Path) -> Path:
    """Write the plain transformers checkpoint (no auxiliary head) that from_pretrained loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out

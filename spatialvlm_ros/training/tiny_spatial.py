"""The tiny spatial VLM: a Qwen2.5-VL-architecture model of ~2.4M parameters, its tokenizer and processor,
and the training-only dense auxiliary head.

The model is a plain ``Qwen2_5_VLForConditionalGeneration`` (3 text layers of width 192, 3 vision layers
of width 128). Images are resized by the processor to 168x140 px (WxH) for the 4:3 camera (10x12
patches of 14 px, merged 2x2 into 30 image tokens; at 140x112 px, 20 tokens, objects were often
smaller than a token's region and the model's misses were mostly the wrong object). The tokenizer is a
byte-level BPE trained here on the QA templates, with every digit its own token so numbers are spelled
digit by digit.

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

# The processor turns any 4:3 image into 168x140 px, WxH (smart_resize keeps the aspect within a 28 px grid).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 140 * 196  # smart_resize floors each side to 28 px: a 4:3 frame becomes 140x168
GRID_ROWS, GRID_COLS = 5, 6  # merged-token regions of a 4:3 image

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

# Per-region targets along the last axis (K = len(CLASSES)); see AUX_LAYOUT for the slices:
#   gripper_cover, class_cover   what covers this region (BCE)
#   gripper_seen, class_seen     what is visible anywhere in the image (BCE, the same in every region)
#   gripper_xyz                  the gripper TCP, camera frame (every region, when the gripper is seen)
#   class_xyz, class_width,      centre, width and distance to the gripper of each class covering this
#   class_gripper_dist           region (weighted by its coverage)
#   table_xyz                    the table point under the region centre, camera frame
#   shape_cover                  how much of the region cubes and cylinders cover, whatever their colour
#                                (shape was the cue the model learned last: its misses were mostly the
#                                same-colour object of the other shape)
_K = len(CLASSES)
AUX_LAYOUT = {
    "gripper_cover": slice(0, 1),
    "class_cover": slice(1, 1 + _K),
    "gripper_seen": slice(1 + _K, 2 + _K),
    "class_seen": slice(2 + _K, 2 + 2 * _K),
    "gripper_xyz": slice(2 + 2 * _K, 5 + 2 * _K),
    "class_xyz": slice(5 + 2 * _K, 5 + 5 * _K),
    "class_width": slice(5 + 5 * _K, 5 + 6 * _K),
    "class_gripper_dist": slice(5 + 6 * _K, 5 + 7 * _K),
    "table_xyz": slice(5 + 7 * _K, 8 + 7 * _K),
    "shape_cover": slice(8 + 7 * _K, 8 + 7 * _K + len(SHAPES)),
}
AUX_SIZE = 8 + 7 * _K + len(SHAPES)
POSITION_MEAN = (0.0, 0.05, 0.62)  # camera frame, metres: roughly the middle of the workspace
POSITION_SCALE = 0.25
LENGTH_SCALE = 0.3
COVER_WEIGHT = 2.0


class AuxHead(nn.Module):
    """Two-layer MLP from each merged vision token to its region's ``AUX_SIZE`` targets."""

    def __init__(self, hidden: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, AUX_SIZE))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of the auxiliary head: BCE on coverage and visibility, smooth-L1 on geometry where the thing
    is visible."""
    L = AUX_LAYOUT
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = bce(pred[:, L["gripper_cover"]], target[:, L["gripper_cover"]])
    loss = loss + COVER_WEIGHT * bce(pred[:, L["class_cover"]], target[:, L["class_cover"]])
    loss = loss + bce(pred[:, L["gripper_seen"]], target[:, L["gripper_seen"]])
    loss = loss + bce(pred[:, L["class_seen"]], target[:, L["class_seen"]])
    loss = loss + COVER_WEIGHT * bce(pred[:, L["shape_cover"]], target[:, L["shape_cover"]])

    def weighted(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        err = nn.functional.smooth_l1_loss(p, t, reduction="none", beta=0.1)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    grip_w = target[:, L["gripper_seen"]]
    seen_w = target[:, L["class_seen"]]
    cover_w = target[:, L["class_cover"]]
    loss = loss + weighted(pred[:, L["gripper_xyz"]], target[:, L["gripper_xyz"]], grip_w.expand(-1, 3))
    k = seen_w.shape[1]
    loss = loss + weighted(pred[:, L["class_xyz"]].reshape(-1, k, 3), target[:, L["class_xyz"]].reshape(-1, k, 3),
                           cover_w[:, :, None].expand(-1, -1, 3))
    loss = loss + weighted(pred[:, L["class_width"]], target[:, L["class_width"]], cover_w)
    loss = loss + weighted(pred[:, L["class_gripper_dist"]], target[:, L["class_gripper_dist"]], cover_w)
    loss = loss + nn.functional.smooth_l1_loss(pred[:, L["table_xyz"]], target[:, L["table_xyz"]], beta=0.1)
    return loss


# ---------------------------------------------------------------------------------- answer head

# What the language model's last hidden state before the answer is trained to hold (training only):
#   [0]    log(value / LENGTH_SCALE) of a metric answer
#   [1:4]  camera-frame centre of the first thing named (the gripper's TCP for the reward question)
#   [4:7]  centre of the second thing named (an object)
#   [7], [8]  the class (index into CLASSES) of the first and second object named
# NaN where a question has no such quantity. Smooth regression targets and the named classes teach the
# attention to find the named objects long before the digit tokens' cross-entropy alone would.
ANSWER_AUX_SIZE = 9
_ANSWER_REGRESSION = 7


class AnswerHead(nn.Module):
    """Linear read-outs of the answer position (so what they read must be linearly present): the
    regression targets from the last hidden state, the named classes from the state after the first
    layer (where the grounding layer's query is formed)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.regression = nn.Linear(hidden, _ANSWER_REGRESSION)
        self.classes = nn.Linear(hidden, 2 * len(CLASSES))

    def forward(self, last: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.regression(last), self.classes(early)], dim=-1)


def answer_aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    reg_p, reg_t = pred[:, :_ANSWER_REGRESSION], target[:, :_ANSWER_REGRESSION]
    valid = torch.isfinite(reg_t)
    loss = nn.functional.smooth_l1_loss(reg_p[valid], reg_t[valid], beta=0.1) if valid.any() else pred.sum() * 0
    k = len(CLASSES)
    for slot in range(2):
        cls = target[:, _ANSWER_REGRESSION + slot]
        ok = torch.isfinite(cls)
        if ok.any():
            logits = pred[:, _ANSWER_REGRESSION + slot * k: _ANSWER_REGRESSION + (slot + 1) * k]
            loss = loss + 0.5 * nn.functional.cross_entropy(logits[ok], cls[ok].long())
    return loss


# ---------------------------------------------------------------------------------- grounding

# Training-only supervision of where the language model looks: in GROUNDING_LAYER, head 0 at the answer
# position attends to the image tokens of the first thing the question names (the gripper, for the reward
# question) and head 1 to those of the second (the target object), in proportion to how much of each
# region they cover. Without it the 3-layer model learned to find the gripper but, within the time
# budget, not the named object among several (measured: its centre estimate stayed ~16 cm off).
GROUNDING_LAYER = 1


def grounding_loss(attention: torch.Tensor, image_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``attention``: (B, heads, T) attention of the answer position in GROUNDING_LAYER; ``image_mask``:
    (B, T) bool, the image tokens (in region order); ``targets``: (B, 2, n_regions) coverage, zero rows
    skipped. Cross-entropy between the normalised coverage and the attention on the image tokens."""
    losses = []
    for b in range(attention.shape[0]):
        on_image = attention[b, :2][:, image_mask[b]]  # (2, n_regions)
        for slot in range(2):
            t = targets[b, slot]
            total = t.sum()
            if total > 0:
                losses.append(-(t / total * torch.log(on_image[slot] + 1e-6)).sum())
    if not losses:
        return attention.sum() * 0.0
    return torch.stack(losses).mean()


def save_pretrained(processor: Any, model: Any, out_dir: str | Path) -> Path:
    """Write the plain transformers checkpoint (no auxiliary head) that from_pretrained loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out

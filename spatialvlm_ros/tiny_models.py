"""Tiny random-weight checkpoints of real VLM architectures, built offline, for tests, demo and bench.

They load through the very ``from_pretrained`` code users run (tokenizer trained locally, processor and
chat template saved beside the weights), so only the weights are fake: what they *say* is random text.
Nothing here is a spatial model; the demo says so when it uses one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FAMILIES = ("qwen2_5_vl", "llava")

_CORPUS = [
    "How far is the robot gripper from the orange tea bottle? Answer with a distance in metres.",
    "The gripper is about 0.35 m from the bottle.",
    "roughly 2 metres, about half a metre, 20 cm, 1.5 m, 40 centimeters, 3 feet",
    "How wide is the gap between the sofa and the table?",
    "0 1 2 3 4 5 6 7 8 9 . m cm mm",
]

# A minimal chat template in the Qwen/ChatML style that places one image before the text; real
# checkpoints ship their own, which the estimator uses unchanged.
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ image_marker }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 420):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )


def build_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0) -> Path:
    """A ~0.8 MB Qwen2.5-VL checkpoint (2 text layers, 2 vision layers) with its processor."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _train_tokenizer(special)
    template = _CHATML_TEMPLATE.replace(
        "{{ image_marker }}", "<|vision_start|><|image_pad|><|vision_end|>")
    tokenizer.chat_template = template
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in special}
    # Small images keep the CPU forward pass cheap: at most 112x112 px -> 16 image tokens.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=template)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            # mrope_section must sum to head_dim / 2 = 64 / 4 / 2 = 8
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
            window_size=56,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP vision tower + Llama text model) checkpoint with its processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out_dir)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    tokenizer = _train_tokenizer(special)
    template = _CHATML_TEMPLATE.replace("{{ image_marker }}", "<image>\n")
    tokenizer.chat_template = template
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in special}
    image_size, patch = 56, 14
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=patch, vision_feature_select_strategy="default",
                               chat_template=template, num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch, projection_dim=32),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    if family == "qwen2_5_vl":
        return build_tiny_qwen2_5_vl(out_dir, seed)
    if family == "llava":
        return build_tiny_llava(out_dir, seed)
    raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write the checkpoint to")
    parser.add_argument("--family", choices=FAMILIES, default="qwen2_5_vl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny(args.family, args.out_dir, args.seed)
    print(f"tiny random {args.family} checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny random-weight checkpoints of real architectures (VLMs; the geometric backend's OWLv2 detector,
Depth Anything depth model and SAM segmenter), built offline, for tests, demo and bench.

They load through the very ``from_pretrained`` code users run (tokenizer trained locally, processor and
chat template saved beside the weights), so only the weights are fake: what they *say* is random text.
Nothing here is a spatial model; the demo says so when it uses one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FAMILIES = ("qwen2_5_vl", "llava", "owlv2", "depth_anything", "sam")

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


def build_tiny_owlv2(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny OWLv2 open-vocabulary detector (~0.3 MB) with a character-level CLIP tokenizer.

    For the geometric backend's detector path: its boxes and scores are random.
    """
    import json
    import string

    import torch
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # "!" first: OWL pads with id 0. Start/end last: OWL pools the text at the highest id (the end token).
    chars = ["!", *string.ascii_lowercase, *string.digits, ".", ",", "-", "'"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    max_tokens = 48  # characters are tokens here: room for "the orange tea bottle"
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), pad_token="!",
                              model_max_length=max_tokens)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                               tokenizer=tokenizer)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=max_tokens, pad_token_id=0,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config)
    # Random box-head weights push every box to a degenerate sliver; with the last layer zeroed each
    # image patch proposes its own cell of the grid (OWLv2's box bias), so boxes are real boxes while
    # their scores stay random.
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_depth_anything(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny metric Depth Anything (Dinov2 backbone, ~0.5 MB) with its image processor.

    For the geometric backend's depth-model path: its depth is random (about max_depth / 2 everywhere).
    """
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    out = Path(out_dir)
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4,
                            num_attention_heads=2, mlp_ratio=2, out_indices=[1, 2, 3, 4],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type="metric", max_depth=20)
    image_processor = DPTImageProcessor(
        do_resize=True, size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
        do_pad=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def build_tiny_sam(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny SAM promptable segmenter (~0.1 MB) with its processor, for the geometric backend's
    ``model.segmenter`` path: box prompts in, one mask per box out (random, as the weights are).

    SAM's parts must agree: the prompt encoder's and mask decoder's hidden size equal the vision encoder's
    ``output_channels``, and the vision ``num_pos_feats`` is half of it.
    """
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    out = Path(out_dir)
    channels, image_size, patch = 16, 64, 16
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=32, output_channels=channels, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=image_size, patch_size=patch,
                                      window_size=2, global_attn_indexes=[1], num_pos_feats=channels // 2,
                                      mlp_dim=64),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=channels, image_size=image_size,
                                                     patch_size=patch, mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=channels, mlp_dim=32, num_hidden_layers=2,
                                                 num_attention_heads=2, iou_head_hidden_dim=16),
    )
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": image_size},
                                               pad_size={"height": image_size, "width": image_size},
                                               mask_size={"longest_edge": image_size // 4},
                                               mask_pad_size={"height": image_size // 4, "width": image_size // 4}))
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    if family == "qwen2_5_vl":
        return build_tiny_qwen2_5_vl(out_dir, seed)
    if family == "llava":
        return build_tiny_llava(out_dir, seed)
    if family == "owlv2":
        return build_tiny_owlv2(out_dir, seed)
    if family == "depth_anything":
        return build_tiny_depth_anything(out_dir, seed)
    if family == "sam":
        return build_tiny_sam(out_dir, seed)
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

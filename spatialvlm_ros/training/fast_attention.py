"""A training-time speed-up for Qwen2.5-VL's vision attention on the CPU.

Without flash-attention, transformers runs the vision tower's attention once per image (a Python loop
over ``cu_seqlens``). When every image in a batch has the same number of patches, as in training, one
batched ``scaled_dot_product_attention`` call computes exactly the same thing several times faster.
Only the forward method of the in-memory modules is replaced; weights and saved checkpoints are
untouched, and batches of mixed sizes fall back to the original method.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch.nn import functional as F


def patch_vision_attention(model: Any) -> int:
    """Patch every vision attention module of a Qwen2.5-VL (or Qwen2-VL) model; returns how many."""
    try:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VLVisionAttention,
            apply_rotary_pos_emb_vision,
        )
    except ImportError:  # pragma: no cover - transformers without Qwen2.5-VL
        return 0
    patched = 0
    for module in model.modules():
        if isinstance(module, Qwen2_5_VLVisionAttention) and not hasattr(module, "_original_forward"):
            module._original_forward = module.forward
            module.forward = types.MethodType(_make_forward(apply_rotary_pos_emb_vision), module)
            patched += 1
    return patched


def _make_forward(apply_rotary):
    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                max_seqlen: int | None = None, **kwargs: Any) -> torch.Tensor:
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        if position_embeddings is None or len(lengths) == 0 or bool((lengths != lengths[0]).any()):
            return self._original_forward(hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                                          max_seqlen=max_seqlen, **kwargs)
        seq_length = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        q, k = apply_rotary(q, k, cos, sin)
        n, per = len(lengths), int(lengths[0])
        # (seq, heads, dim) -> (images, heads, per, dim)
        q, k, v = (t.reshape(n, per, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        out = out.transpose(1, 2).reshape(seq_length, -1)
        return self.proj(out)

    return forward

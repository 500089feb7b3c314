"""Transformer blocks in the Point-MAE / Point-JEPA layout (pre-norm, positions before every block or,
as Point-JEPA's `encoder_add_pos_at_every_layer=False`, once before the first).

Attention is written out (MatMul, Softmax, MatMul) rather than scaled_dot_product_attention so that
the exported graph has the plain pattern every TensorRT version fuses, and never the opset-23
`Attention` op that TensorRT builders reject.
"""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, L, C); `key_mask` (B, L) bool, False = key ignored."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1))
        if key_mask is not None:
            attn = attn.masked_fill(~key_mask[:, None, None, :], torch.finfo(attn.dtype).min)
        attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, length, dim)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Blocks with the positional embedding added before every block (or once), then a final LayerNorm."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 pos_every_block: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pos_every_block = pos_every_block

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor | None = None):
        if not self.pos_every_block:
            x = x + pos
        for block in self.blocks:
            x = block(x + pos if self.pos_every_block else x, key_mask)
        return self.norm(x)


def positional_mlp(dim: int, hidden: int = 128) -> nn.Sequential:
    """Centre (x, y, z) -> embedding; Linear(3, 128), GELU, Linear(128, d) as in Point-MAE."""
    return nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, dim))

"""Building blocks shared by the trajectory VQ-VAE and the latent prior."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, x * tanh(softplus(x)). In ONNX export it is written with one exp,
    x * n / (n + 2) with n = e^x (e^x + 2) (equal in exact arithmetic; x clamped at 20, where
    n / (n + 2) is 1 in float32): ONNX Runtime's Softplus + Tanh took 21 % of the decoder."""
    if torch.onnx.is_in_onnx_export():
        e = torch.exp(torch.clamp(x, max=20.0))
        n = e * (e + 2.0)
        return x * n / (n + 2.0)
    return F.mish(x)


class CausalConvBlock(nn.Module):
    """Residual temporal conv block (Conv1d, GroupNorm, Mish), left-padded so step t sees <= t."""

    def __init__(self, width: int, kernel: int = 3):
        super().__init__()
        self.pad = kernel - 1
        self.conv1 = nn.Conv1d(width, width, kernel)
        self.norm1 = nn.GroupNorm(8, width)
        self.conv2 = nn.Conv1d(width, width, kernel)
        self.norm2 = nn.GroupNorm(8, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = mish(self.norm1(self.conv1(F.pad(x, (self.pad, 0)))))
        h = self.norm2(self.conv2(F.pad(h, (self.pad, 0))))
        return mish(x + h)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional key/value cache for sampling."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x, causal: bool = True, cache: tuple | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # Explicit mask (exports to ONNX with fixed shapes). With a cache the new queries sit
        # at the end, so query i may see keys up to (cached + i).
        mask = None
        if causal:
            Tk = k.shape[2]
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(Tk - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, causal: bool = True, cache: tuple | None = None):
        a, new_cache = self.attn(self.ln1(x), causal=causal, cache=cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), new_cache

"""ONNX-exportable wrappers with fixed shapes (TensorRT-friendly: no growing tensors).

* ``PriorStepGraph``: one autoregressive step of the prior for a batch of N sequences. The
  key/value cache is an explicit, fixed-size input and output (layers, N, heads, T, head_dim);
  ``pos`` selects the slot written this step and masks the slots not written yet. Position 0
  embeds the state, position p > 0 embeds the token drawn at p - 1.
* ``DecoderGraph``: codes (N, T) + state (N, obs) -> normalized trajectory (N, H, D).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from planner_node.models.prior import LatentPrior
from planner_node.models.vqvae import TrajectoryVQVAE


class PriorStepGraph(nn.Module):
    def __init__(self, prior: LatentPrior):
        super().__init__()
        self.p = prior
        self.T = prior.vq.num_tokens
        self.heads = prior.cfg.heads
        self.dh = prior.cfg.width // prior.cfg.heads

    def forward(self, state, token, pos, k_cache, v_cache):
        p = self.p
        N = state.shape[0]
        slot = (torch.arange(self.T)[None] == pos[:, None]).float()          # (1, T) one-hot of pos
        x = torch.where(pos[:, None] == 0, p.state_embed(state), p.tok_embed(token[:, 0]))
        x = x + (slot @ p.pos[0])                                              # (N, W)
        seen = torch.arange(self.T)[None] <= pos[:, None]                      # (1, T)
        ks, vs = [], []
        for i, blk in enumerate(p.blocks):
            h = blk.ln1(x)
            q, k, v = blk.attn.qkv(h).view(N, 3, self.heads, self.dh).unbind(1)   # (N, H, dh)
            w = slot.view(1, 1, self.T, 1)
            kc = k_cache[i] * (1 - w) + k[:, :, None] * w                    # write slot pos
            vc = v_cache[i] * (1 - w) + v[:, :, None] * w
            att = (kc @ q[..., None])[..., 0] / math.sqrt(self.dh)           # (N, H, T)
            att = att.masked_fill(~seen.view(1, 1, self.T), float("-inf")).softmax(-1)
            y = (att[..., None] * vc).sum(2).reshape(N, -1)
            x = x + blk.attn.proj(y)
            x = x + blk.mlp(blk.ln2(x))
            ks.append(kc)
            vs.append(vc)
        return p.head(p.ln(x)), torch.stack(ks), torch.stack(vs)

    def cache_shape(self, n: int) -> tuple[int, ...]:
        return (len(self.p.blocks), n, self.heads, self.T, self.dh)


class DecoderGraph(nn.Module):
    def __init__(self, vq: TrajectoryVQVAE):
        super().__init__()
        self.vq = vq

    def forward(self, tokens, state):
        return self.vq.decode(F.embedding(tokens, self.vq.quant.embed), state)

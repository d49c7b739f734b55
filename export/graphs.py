"""ONNX-exportable wrappers with fixed shapes (TensorRT-friendly: no growing tensors).

* ``PriorStepGraph``: one autoregressive step of the prior for a batch of N sequences. The
  key/value cache is an explicit, fixed-size input (layers, N, heads, T, head_dim) whose slots
  < ``pos`` are valid; the graph outputs this step's key/value (layers, N, heads, head_dim) and
  the caller writes them into slot ``pos``. Position 0 embeds the state, position p > 0 embeds
  the token drawn at p - 1.
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
        """Slots < pos of the caches hold earlier steps; the rest are ignored (masked). Returns
        logits and only this step's keys/values (layers, N, heads, head_dim): the caller writes
        them into slot ``pos``. Blending the new slot into the whole cache inside the graph was
        measured as 40 % of the step's time (elementwise Mul over the full cache)."""
        p = self.p
        N = state.shape[0]
        slot = (torch.arange(self.T)[None] == pos[:, None]).float()          # (1, T) one-hot of pos
        x = torch.where(pos[:, None] == 0, p.state_embed(state), p.tok_embed(token[:, 0]))
        x = x + (slot @ p.pos[0])                                              # (N, W)
        before = (torch.arange(self.T)[None] < pos[:, None]).view(1, 1, 1, self.T)
        ks, vs = [], []
        for i, blk in enumerate(p.blocks):
            h = blk.ln1(x)
            q, k, v = blk.attn.qkv(h).view(N, 3, self.heads, 1, self.dh).unbind(1)  # (N, H, 1, dh)
            scale = 1.0 / math.sqrt(self.dh)
            att_c = (q @ k_cache[i].transpose(-1, -2)) * scale                # (N, H, 1, T) earlier slots
            att_c = att_c.masked_fill(~before, float("-inf"))
            att_n = (q * k).sum(-1, keepdim=True) * scale                      # (N, H, 1, 1) this step
            att = torch.cat([att_c, att_n], -1).softmax(-1)
            y = att[..., : self.T] @ v_cache[i] + att[..., self.T:] * v        # (N, H, 1, dh)
            x = x + blk.attn.proj(y.reshape(N, -1))
            x = x + blk.mlp(blk.ln2(x))
            ks.append(k[:, :, 0])
            vs.append(v[:, :, 0])
        return p.head(p.ln(x)), torch.stack(ks), torch.stack(vs)

    def cache_shape(self, n: int) -> tuple[int, ...]:
        return (len(self.p.blocks), n, self.heads, self.T, self.dh)

    def slot_shape(self, n: int) -> tuple[int, ...]:
        return (len(self.p.blocks), n, self.heads, self.dh)


class DecoderGraph(nn.Module):
    def __init__(self, vq: TrajectoryVQVAE):
        super().__init__()
        self.vq = vq

    def forward(self, tokens, state):
        return self.vq.decode(F.embedding(tokens, self.vq.quant.embed), state)

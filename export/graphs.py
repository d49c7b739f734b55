"""ONNX-exportable wrappers with fixed shapes (TensorRT-friendly: no growing tensors).

* ``PriorStepGraph``: one autoregressive step of the prior for a batch of N sequences. The
  key/value cache is an explicit, fixed-size input (layers, N, heads, T, head_dim) whose slots
  < ``pos`` are valid; the graph outputs this step's key/value (layers, N, heads, head_dim) and
  the caller writes them into slot ``pos``. Position 0 embeds the state, position p > 0 embeds
  the token drawn at p - 1.
* ``DecoderGraph``: codes (N, T) + state (N, obs) -> normalized trajectory (N, H, D).
* ``SampledPlanGraph``: a whole sampled plan in one graph: every prior step unrolled (the KV cache
  grows inside, so step t attends to t + 1 slots, not T), temperature and top-p sampling by inverse
  CDF of the caller's uniforms (the same arithmetic as ``planner_node.runtime.sampling``, in
  float32), then the decoder. One engine call per tick instead of T + 1 calls and T host-side
  sampling steps; the draws come in as an input, so a seeded runtime stays reproducible.
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
        ar = torch.arange(self.T, device=pos.device)[None]                   # on pos's device (CUDA too)
        slot = (ar == pos[:, None]).float()                                    # (1, T) one-hot of pos
        x = torch.where(pos[:, None] == 0, p.state_embed(state), p.tok_embed(token[:, 0]))
        x = x + (slot @ p.pos[0])                                              # (N, W)
        before = (ar < pos[:, None]).view(1, 1, 1, self.T)
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


def sample_tokens_in_graph(logits, u, temperature, top_p, tail: int):
    """Temperature, nucleus filtering and an inverse-CDF draw in tensor ops that export to ONNX
    and TensorRT; ``planner_node.runtime.sampling`` does the same in float64. logits (N, K),
    u (N,) uniforms in [0, 1), temperature and top_p (1,). Returns tokens (N,) int64 and, per row,
    whether the nucleus could not be resolved in-graph (1) or could (0).

    Nucleus filtering drops the least likely codes whose mass, counted from the least likely up
    (itself included), is below 1 - top_p. The threshold comes from the ``tail`` least likely
    codes only (TopK of ``tail``): a full sort of K codes is a 180 us TopK in ONNX Runtime, 16
    times a plan, against 40 us for the tail. When all ``tail`` codes would be dropped the
    threshold lies beyond them; the row is flagged and the caller redoes that plan with the step
    graphs, so a flagged plan is never used. Token for token the same as the numpy sampler, except
    when a uniform falls within float32 rounding of a CDF boundary (about 1e-7 per draw)."""
    p = (logits / temperature.clamp_min(1e-6)).softmax(-1)
    low = p.topk(tail, -1, largest=False).values                              # (N, tail), ascending
    above = p.sum(-1, keepdim=True) - low.cumsum(-1)                          # mass of the codes above
    # top_p >= 1 keeps every code, as the numpy sampler does (float32 rounding of the total
    # would otherwise drop codes of ~1e-8 mass, and flag rows for nothing).
    dropped = ((above > top_p) & (top_p < 1.0)).sum(-1, keepdim=True)        # (N, 1) codes dropped
    tau = low.gather(-1, dropped.clamp_max(tail - 1))                         # least likely kept code
    p = p * (p >= tau).float()   # (a Where against zeros_like exported 3x slower in ONNX Runtime)
    cdf = p.cumsum(-1)
    idx = (cdf < u[:, None] * cdf[:, -1:]).sum(-1)
    return idx.clamp_max(logits.shape[-1] - 1), (dropped[:, 0] >= tail).long()


class SampledPlanGraph(nn.Module):
    """state (1, obs) normalized, uniforms (N, T), temperature (1,), top_p (1,) ->
    tokens (N, T) int64, the normalized trajectory (N, H, D) they decode to, and
    ``nucleus_overflow`` (1,) int64: the draws whose nucleus the graph could not resolve (the
    plan is then redone with the step graphs; see ``sample_tokens_in_graph``).

    Written for few, large operators (ONNX Runtime spends ~4 us per operator on these small
    tensors, more than their arithmetic): q, k and v are three GEMMs on slices of the fused
    weight (no split/squeeze), the attention scale is folded into q's weights, and keys are
    cached transposed (N, heads, dh, t) so a score is one MatMul without a Transpose."""

    def __init__(self, prior: LatentPrior, vq: TrajectoryVQVAE, tail: int | None = None):
        super().__init__()
        self.p, self.dec = prior, DecoderGraph(vq)
        self.T = prior.vq.num_tokens
        self.heads = prior.cfg.heads
        self.W = prior.cfg.width
        self.dh = self.W // self.heads
        self.tail = tail or max(1, prior.vq.codebook_size // 2)

    def forward(self, uniforms, state, temperature, top_p):
        p, W, H, dh = self.p, self.W, self.heads, self.dh
        N = int(uniforms.shape[0])
        # Broadcast by adding constant zeros: expand/repeat export with a computed shape, which
        # ONNX shape inference cannot resolve, and every shape of this graph must be fixed.
        s = state + torch.zeros(N, p.vq.obs_dim, device=state.device)
        scale = 1.0 / math.sqrt(dh)
        weights = []
        for blk in p.blocks:
            w, b = blk.attn.qkv.weight, blk.attn.qkv.bias
            weights.append(((w[:W] * scale, b[:W] * scale), (w[W:2 * W], b[W:2 * W]), (w[2 * W:], b[2 * W:])))
        keys_t: list = [None] * len(p.blocks)                 # (N, H, dh, t): keys, transposed
        vals: list = [None] * len(p.blocks)                   # (N, H, t, dh)
        x = p.state_embed(s)                                  # position 0: the state
        tokens, overflow = [], []
        for t in range(self.T):                               # unrolled: every shape is fixed
            x = x + p.pos[0, t]
            for i, blk in enumerate(p.blocks):
                (wq, bq), (wk, bk), (wv, bv) = weights[i]
                h = blk.ln1(x)
                q = F.linear(h, wq, bq).reshape(N, H, 1, dh)
                k = F.linear(h, wk, bk).reshape(N, H, dh, 1)
                v = F.linear(h, wv, bv).reshape(N, H, 1, dh)
                keys_t[i] = k if t == 0 else torch.cat([keys_t[i], k], 3)
                vals[i] = v if t == 0 else torch.cat([vals[i], v], 2)
                att = (q @ keys_t[i]).softmax(-1)             # (N, H, 1, t + 1): causal by construction
                x = x + blk.attn.proj((att @ vals[i]).reshape(N, W))
                x = x + blk.mlp(blk.ln2(x))
            tok, over = sample_tokens_in_graph(p.head(p.ln(x)), uniforms[:, t], temperature, top_p, self.tail)
            tokens.append(tok)
            overflow.append(over)
            if t + 1 < self.T:
                x = p.tok_embed(tok)                          # position t + 1 embeds token t
        tokens = torch.stack(tokens, 1)
        return tokens, self.dec(tokens, s), torch.stack(overflow).sum().reshape(1)

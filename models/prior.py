"""Causal transformer prior over VQ codes, conditioned on the current state (KV cache for sampling)."""
from __future__ import annotations

import torch
from torch import nn

from planner_node.models.config import PriorConfig, VQConfig
from planner_node.models.layers import TransformerBlock


class LatentPrior(nn.Module):
    """p(token_t | state, tokens_<t). Position 0 holds the state embedding."""

    def __init__(self, vq: VQConfig, cfg: PriorConfig):
        super().__init__()
        self.vq, self.cfg = vq, cfg
        self.state_embed = nn.Linear(vq.obs_dim, cfg.width)
        self.tok_embed = nn.Embedding(vq.codebook_size, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, vq.num_tokens, cfg.width))
        self.blocks = nn.ModuleList([TransformerBlock(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.layers)])
        self.ln = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, vq.codebook_size)

    def _inputs(self, state: torch.Tensor, tokens: torch.Tensor | None, start: int) -> torch.Tensor:
        """Embeddings for positions start.. : position 0 is the state, position t>0 is token t-1."""
        parts = []
        if start == 0:
            parts.append(self.state_embed(state)[:, None])
        if tokens is not None and tokens.shape[1] > 0:
            parts.append(self.tok_embed(tokens))
        x = torch.cat(parts, dim=1)
        return x + self.pos[:, start: start + x.shape[1]]

    def forward(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, K) for every token given the ones before it."""
        x = self._inputs(state, tokens[:, :-1], 0)
        for blk in self.blocks:
            x, _ = blk(x, causal=True)
        return self.head(self.ln(x))

    def step(self, state: torch.Tensor, new_tokens: torch.Tensor | None, cache: list | None):
        """Incremental decoding: logits for the next token and the updated per-layer cache."""
        start = 0 if cache is None else cache[0][0].shape[2]
        x = self._inputs(state, new_tokens if cache is not None else None, start)
        new_cache = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, causal=True, cache=None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln(x[:, -1])), new_cache

    def nll(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self(state, tokens)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Temperature, then nucleus (top-p) filtering; returns log-probabilities (-inf = excluded)."""
    logits = logits / max(temperature, 1e-6)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest set with mass >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.log_softmax(-1)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Token ids drawn with given uniforms u (N,) in [0, 1): the runtime does the same in numpy."""
    cdf = probs.double().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u.double()[:, None].contiguous()).clamp_max(probs.shape[-1] - 1)


@torch.no_grad()
def sample_tokens(prior: LatentPrior, state: torch.Tensor, n: int, temperature: float, top_p: float,
                  uniforms) -> torch.Tensor:
    """n token sequences for one state (1, obs_dim) with the KV cache; returns (n, T).

    ``uniforms``: (n, T) numbers in [0, 1) (e.g. ``numpy.random.Generator.random``); sharing
    them is how the exported runtime reproduces this planner's plans exactly."""
    u = torch.as_tensor(uniforms)
    s = state.expand(n, -1)
    logits, cache = prior.step(s, None, None)
    out = []
    for t in range(prior.vq.num_tokens):
        tok = inverse_cdf(filter_logits(logits, temperature, top_p).exp(), u[:, t])
        out.append(tok)
        if t + 1 < prior.vq.num_tokens:
            logits, cache = prior.step(s, tok, cache)
    return torch.cat(out, dim=1)

"""State-conditional trajectory VQ-VAE (H-GAP; TAP when ``predict_return``).

Input: a normalized chunk of H (observation, action) pairs. Encoder: causal residual conv
blocks and one transformer block, max-pooled to one latent per ``latent_stride`` steps,
each latent split into ``codes_per_latent`` codes quantized against an EMA codebook.
Decoder: codes -> latents, upsampled to H steps, conditioned on the current state s_0;
it predicts states as offsets from s_0, actions, and for TAP reward and return-to-go.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from planner_node.models.config import VQConfig
from planner_node.models.layers import CausalConvBlock, TransformerBlock


class EMAQuantizer(nn.Module):
    """Nearest-code quantizer with EMA codebook updates and dead-code restarts."""

    def __init__(self, size: int, dim: int, decay: float):
        super().__init__()
        self.decay = decay
        embed = torch.randn(size, dim) * 0.1
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(size))
        self.register_buffer("embed_sum", embed.clone())

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + self.embed.pow(2).sum(1)[None]
        return d.argmin(1).view(z.shape[:-1])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.embed)

    def forward(self, z: torch.Tensor):
        idx = self.codes(z)
        q = self.lookup(idx)
        if self.training:
            with torch.no_grad():
                flat = z.reshape(-1, z.shape[-1])
                onehot = F.one_hot(idx.reshape(-1), self.embed.shape[0]).type(flat.dtype)
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    counts, sums = onehot.sum(0), onehot.t() @ flat
                    torch.distributed.all_reduce(counts)
                    torch.distributed.all_reduce(sums)
                else:
                    counts, sums = onehot.sum(0), onehot.t() @ flat
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                size = (self.cluster_size + 1e-5) / (n + self.embed.shape[0] * 1e-5) * n
                self.embed.copy_(self.embed_sum / size[:, None])
                # Restart codes nobody uses with random encoder outputs (keeps the codebook alive).
                dead = self.cluster_size < 1e-2
                if dead.any():
                    pick = flat[torch.randint(0, flat.shape[0], (int(dead.sum()),), device=flat.device)]
                    self.embed[dead] = pick
                    self.embed_sum[dead] = pick
                    self.cluster_size[dead] = 1.0
        commit = F.mse_loss(z, q.detach())
        q = z + (q - z).detach()  # straight-through
        return q, idx, commit


class TrajectoryVQVAE(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg
        d_in = c.obs_dim + c.act_dim + (2 if c.predict_return else 0)
        self.d_out = d_in
        self.enc_in = nn.Linear(d_in, c.width)
        self.enc_conv = nn.ModuleList([CausalConvBlock(c.width) for _ in range(c.conv_blocks)])
        self.enc_attn = TransformerBlock(c.width, c.heads)
        self.to_codes = nn.Linear(c.width, c.codes_per_latent * c.code_dim)
        self.quant = EMAQuantizer(c.codebook_size, c.code_dim, c.ema_decay)
        self.from_codes = nn.Linear(c.codes_per_latent * c.code_dim, c.width)
        self.state_embed = nn.Linear(c.obs_dim, c.width)
        self.pos = nn.Parameter(torch.zeros(1, c.horizon, c.width))
        self.dec_conv = nn.ModuleList([CausalConvBlock(c.width) for _ in range(c.conv_blocks)])
        self.dec_attn = TransformerBlock(c.width, c.heads)
        self.dec_out = nn.Linear(c.width, d_in)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, H, D) normalized -> quantized (B, T, code_dim), tokens (B, T), commitment loss."""
        c = self.cfg
        h = self.enc_in(x).transpose(1, 2)
        for blk in self.enc_conv:
            h = blk(h)
        h, _ = self.enc_attn(h.transpose(1, 2), causal=True)
        h = F.max_pool1d(h.transpose(1, 2), c.latent_stride).transpose(1, 2)  # (B, L, W)
        z = self.to_codes(h).view(x.shape[0], c.num_tokens, c.code_dim)
        return self.quant(z)

    def decode(self, codes: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """codes (B, T, code_dim), state (B, obs_dim) normalized -> (B, H, D) normalized."""
        c = self.cfg
        h = self.from_codes(codes.reshape(codes.shape[0], c.latent_steps, c.codes_per_latent * c.code_dim))
        h = h.repeat_interleave(c.latent_stride, dim=1) + self.pos + self.state_embed(state)[:, None]
        h = h.transpose(1, 2)
        for blk in self.dec_conv:
            h = blk(h)
        # Causal: step t depends only on codes up to its latent step, so TAP can decode prefixes.
        h, _ = self.dec_attn(h.transpose(1, 2), causal=True)
        out = self.dec_out(h)
        # States as offsets from s_0 (in normalized units); actions and returns as they are.
        obs = state[:, None] + out[..., : c.obs_dim]
        return torch.cat([obs, out[..., c.obs_dim:]], dim=-1)

    def decode_tokens(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quant.lookup(tokens), state)

    def forward(self, x: torch.Tensor):
        q, idx, commit = self.encode(x)
        recon = self.decode(q, x[:, 0, : self.cfg.obs_dim])
        return recon, idx, commit

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        recon, idx, commit = self(x)
        total, parts = reconstruction_loss(self.cfg, x, recon, commit)
        return total, {"loss": total.item(), **{k: v.item() for k, v in parts.items()}}


def reconstruction_loss(c, x: torch.Tensor, recon: torch.Tensor, commit: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The VQ-VAE's training loss: observation MSE + ``action_weight`` x action MSE (each a mean
    over its own features, z-scored) [+ reward and return MSE] + ``commitment`` x the commitment
    term; and its parts."""
    d_oa = c.obs_dim + c.act_dim
    parts = {"rec_obs": F.mse_loss(recon[..., : c.obs_dim], x[..., : c.obs_dim]),
             "rec_act": F.mse_loss(recon[..., c.obs_dim: d_oa], x[..., c.obs_dim: d_oa]), "commit": commit}
    total = parts["rec_obs"] + c.action_weight * parts["rec_act"] + c.commitment * commit
    if c.predict_return:
        parts["rec_return"] = F.mse_loss(recon[..., d_oa:], x[..., d_oa:])
        total = total + parts["rec_return"]
    return total, parts

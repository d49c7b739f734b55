"""Export of the VQ-VAE + prior ("latent") kinds: the prior-step graph (one autoregressive step
over an explicit fixed-size KV cache, outputting only the new slot) and the decoder graph, at the
batch sizes a kind asks for, plus the reference weights. Shared by the latent kinds' export
functions; names no kind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node.export.graphs import DecoderGraph, PriorStepGraph
from planner_node.export.kind_export import Exported, check_parity, export_onnx
from planner_node.models.train import build_models

PARITY_ATOL = {"prior_step": 1e-4, "decoder": 1e-4}  # max abs difference, ONNX Runtime vs torch (fp32)


def bucket_sizes(full: int, factor: int) -> list[int]:
    """Batch sizes below ``full``: 1, factor, factor^2, ... (the smaller fixed-shape copies)."""
    sizes, b = [], 1
    while b < full and factor > 1:
        sizes.append(b)
        b *= factor
    return sizes


def export_prior_step(step: PriorStepGraph, cfg, n: int, gen, path: Path) -> float:
    state = torch.randn(n, cfg.vq.obs_dim, generator=gen)
    token = torch.randint(0, cfg.vq.codebook_size, (n, 1), generator=gen)
    k = torch.randn(step.cache_shape(n), generator=gen) * 0.1
    v = torch.randn(step.cache_shape(n), generator=gen) * 0.1
    pos = torch.tensor([2])
    export_onnx(step, (state, token, pos, k, v), ["state", "token", "pos", "k_cache", "v_cache"],
            ["logits", "k_new", "v_new"], path)
    with torch.no_grad():
        exp = [t.numpy() for t in step(state, token, pos, k, v)]
    return check_parity(path, {"state": state.numpy(), "token": token.numpy(), "pos": pos.numpy(),
                          "k_cache": k.numpy(), "v_cache": v.numpy()}, exp, PARITY_ATOL["prior_step"])


def export_decoder(dec: DecoderGraph, cfg, n: int, gen, path: Path) -> float:
    toks = torch.randint(0, cfg.vq.codebook_size, (n, cfg.vq.num_tokens), generator=gen)
    st = torch.randn(n, cfg.vq.obs_dim, generator=gen)
    export_onnx(dec, (toks, st), ["tokens", "state"], ["trajectory"], path)
    with torch.no_grad():
        exp = [dec(toks, st).numpy()]
    return check_parity(path, {"tokens": toks.numpy(), "state": st.numpy()}, exp, PARITY_ATOL["decoder"])


def export_latent(ck: dict, out_dir: Path, prior_batches: list[int], decoder_batches: list[int]) -> Exported:
    """The prior step at each of ``prior_batches`` (the largest is ``prior_step``, the others
    ``prior_step_b<N>``), the decoder likewise, and ``reference.pt``."""
    cfg, vq, prior, norm = build_models(ck)
    gen = torch.Generator().manual_seed(0)
    step, dec = PriorStepGraph(prior).eval(), DecoderGraph(vq).eval()
    errs = {}
    for base, batches, fn, module in (("prior_step", prior_batches, export_prior_step, step),
                                      ("decoder", decoder_batches, export_decoder, dec)):
        full = max(batches)
        for b in [full, *sorted(set(batches) - {full})]:
            name = base if b == full else f"{base}_b{b}"
            errs[name] = fn(module, cfg, b, gen, out_dir / f"{name}.onnx")
    # Reference weights for the torch backend (loaded with weights_only=True).
    torch.save({"vq": vq.state_dict(), "prior": prior.state_dict()}, out_dir / "reference.pt")
    v = cfg.vq
    kind_config = {"num_tokens": v.num_tokens, "codebook_size": v.codebook_size, "latent_stride": v.latent_stride,
                   "codes_per_latent": v.codes_per_latent, "obs_dim": v.obs_dim, "act_dim": v.act_dim,
                   "predict_return": v.predict_return, "discount": v.discount, "model_config": ck["config"]}
    return Exported(graphs=errs, horizon=v.horizon, kind_config=kind_config,
                    normalizer={k: np.asarray(x).astype(float).tolist() for k, x in norm.stats.items()},
                    reference=True,
                    card=[f"- Model: VQ-VAE + prior, {v.num_tokens} codes of {v.codebook_size} per plan "
                          f"(config in manifest.yaml: kind_config.model_config)."])

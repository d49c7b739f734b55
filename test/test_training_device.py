"""Where trainers run (``--device auto|cpu|cuda``) and multi-process training under torchrun:
checkpoints hold CPU tensors wherever they were trained, so a GPU run resumes and exports on a
CPU machine. The CUDA tests skip, saying why, on a machine without a CUDA device."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def _no_cuda_reason(n: int = 1) -> str | None:
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}): GPU-only test"
    if torch.cuda.device_count() < n:
        return f"needs {n} CUDA devices, torch sees {torch.cuda.device_count()}: multi-GPU test"
    return None


def _tensor_devices(obj, out=None) -> set:
    out = set() if out is None else out
    if isinstance(obj, torch.Tensor):
        out.add(obj.device.type)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensor_devices(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensor_devices(v, out)
    return out


def _train_every_kind(tiny_data, tmp_path, device: str) -> dict:
    from planner_node.kinds import KINDS, resolve
    from planner_node.models.config import config_from_dict
    runs = {}
    for name, k in KINDS.items():
        run = tmp_path / name
        resolve(k.trainer)(config_from_dict({"kind": name, **k.tiny}), tiny_data, run, progress=False,
                           device=device).run()
        runs[name] = run
    return runs


def test_device_names_are_checked_and_auto_falls_back_to_the_cpu():
    from planner_node.models.device import DeviceError, resolve_device
    with pytest.raises(DeviceError, match="--device: 'gpu'; valid: auto, cpu, cuda"):
        resolve_device("gpu")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_on_a_machine_without_it_is_refused_by_name(tiny_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal cannot happen here")
    r = subprocess.run([sys.executable, "-m", "planner_node.cli", "train-critic", "--data", str(tiny_data),
                        "--out", str(tmp_path / "c"), "--steps", "5", "--device", "cuda", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "--device cuda" in r.stderr and "use --device cpu or auto" in r.stderr, r.stderr
    assert not (tmp_path / "c" / "critic.pt").exists()


def test_every_kind_trained_on_the_cpu_writes_cpu_tensors(tiny_data, tmp_path):
    runs = _train_every_kind(tiny_data, tmp_path, "cpu")
    for name, run in runs.items():
        ck = torch.load(run / "checkpoint.pt", map_location=None, weights_only=True)
        assert _tensor_devices(ck) == {"cpu"}, name


def test_every_kind_trained_on_cuda_resumes_and_exports_on_the_cpu(tiny_data, tmp_path):
    why = _no_cuda_reason()
    if why:
        pytest.skip(why)
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.kinds import KINDS, resolve
    from planner_node.models.config import config_from_dict
    runs = _train_every_kind(tiny_data, tmp_path, "cuda")
    for name, run in runs.items():
        ck = torch.load(run / "checkpoint.pt", map_location=None, weights_only=True)
        assert _tensor_devices(ck) == {"cpu"}, name   # loads on a machine without CUDA
        before = (run / "checkpoint.pt").read_bytes()
        k = KINDS[name]
        resolve(k.trainer)(config_from_dict({"kind": name, **k.tiny}), tiny_data, run, progress=False,
                           device="cpu").run()   # a finished GPU run, resumed on the CPU
        assert ck["stage"] == "done", name
        if name in ("chunk", "idql"):
            assert (run / "checkpoint.pt").read_bytes() == before, name
        export_bundle(run, tmp_path / f"{name}_bundle", **k.smoke)


def _torchrun(tmp_path, tiny_data, kind_cfg: dict, device: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(kind_cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "planner_node.cli", "train", "--config", str(cfg), "--data", str(tiny_data),
                           "--out", str(tmp_path / "run"), "--device", device, "--quiet"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_two_ranks_train_hgap_with_ddp(tiny_data, tmp_path, device):
    """torchrun, 2 ranks: gloo on the CPU, NCCL on 2 GPUs. Rank 0 writes one checkpoint, which
    finishes both stages and loads on the CPU."""
    if device == "cuda":
        why = _no_cuda_reason(2)
        if why:
            pytest.skip(why)
    cfg = {"kind": "hgap", **TINY, "train": {**TINY["train"], "vq_steps": 40, "prior_steps": 40}}
    r = _torchrun(tmp_path, tiny_data, cfg, device)
    assert r.returncode == 0, r.stderr[-3000:]
    from planner_node.models.checkpoint import load_checkpoint
    ck = load_checkpoint(tmp_path / "run")
    assert ck["stage"] == "done"
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 1, rows   # header, one vq and one prior row (eval_every 50 > 40 steps: the last)

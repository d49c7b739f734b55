"""Engine bundles: a directory a robot can receive and swap to (reading and verifying; no torch).

``manifest.yaml`` (format version 5; format 4 loads as bundle_version 0; format 3, which also
lacks ``safety_filter`` and ``critic``, loads as if they were null)::

    format_version: 5
    bundle_version: <int >= 1>       # monotonically increasing per release: a node that trusts
                                     # signers refuses a bundle older than the one it runs (rollback)
    card: {file: CARD.md, sha256} or null   # pinned like the graphs, so a signature covers its claims
    planner: <kind>                                           # a record of planner_node.kinds
    spec_hash, joint_names, obs_blocks, control_period_s      # checked against this build
    horizon, trained_tasks
    normalizer: {obs_mean: [...], obs_std: [...], act_mean, act_std, ret_mean, ret_std}
    planner_defaults: {...}          # the kind's settings (its record's defaults; one it lacks takes the default)
    kind_config: {...}               # exactly the kind's fields (its record's kind_config_keys)
    graphs:
      <name>: {file: <name>.onnx, sha256, inputs: [{name, dtype, shape}], outputs: [...], parity_max_abs_err}
    reference: {file, sha256} or null  # torch weights for the torch backend
    plans: [{graph, file, sha256, key, tensorrt_version, compute_capability, precision}]   # may be []
    safety_filter: {name: ldm, energy: <graph>, lyapunov: <graph>, threshold, percentile, source} or null
    critic: {graph, tasks, discount, weight, source} or null   # V(s) per task, for candidate scoring
    producer: {planner_node, torch, onnx, opset, python, git_commit, checkpoint,
               dataset: {sha256 (of the dataset's meta.json), path (relative to the repo)} or null}

Every key above is required and no other is accepted (``_check_schema`` names what differs).
``manifest.sig`` (optional, ``runtime/signing.py``) holds Ed25519 signatures over the manifest's
exact bytes; ``load_bundle(..., trust=TrustStore)`` refuses a bundle that no trusted key signed.
Loading is a trust boundary: ``yaml.safe_load``, every file path must stay inside the bundle
directory, every file's sha256 must match, the spec must match, and each ONNX graph's
declared inputs/outputs must match the graph itself (and may not pull external data from
outside the bundle) before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from planner_node import spec
from planner_node.atomic import sha256_file
from planner_node.kinds import KINDS

FORMAT_VERSION = 5  # 2: prior_step outputs only the new KV slot; 3: kind-specific fields under kind_config;
#                    4: safety_filter (the Lyapunov density model's graphs and threshold, or null),
#                       critic (the task critic's graph, task order, discount, weight, or null)
#                    5: bundle_version (rollback protection for signed bundles)
READABLE_VERSIONS = (3, 4, 5)
DTYPES = {"float32": np.float32, "int64": np.int64, "float16": np.float16}


class BundleError(ValueError):
    """The bundle is unusable; the message names the file or field and the reason."""


class BundleSignatureError(BundleError):
    """A trusted load refused the bundle's signature; ``reason``: unsigned, unknown_key,
    bad_signature or malformed (``runtime/signing.py``)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


#: The manifest's schema: every key is required and no other is accepted (a key the runtime does
#: not know is a bundle made for another build, or an attack, e.g. a nest of YAML aliases).
TOP_KEYS = frozenset((
    "format_version", "planner", "spec_hash", "joint_names", "obs_blocks", "control_period_s", "horizon",
    "trained_tasks", "normalizer", "planner_defaults", "kind_config", "graphs", "reference", "plans", "producer",
    "safety_filter", "critic"))
TOP_KEYS_V5 = TOP_KEYS | {"bundle_version", "card"}   # card: {file, sha256} or null (pinned, so signed)
TOP_KEYS_V3 = TOP_KEYS - {"safety_filter", "critic"}
CRITIC_KEYS = frozenset(("graph", "tasks", "discount", "weight", "source"))
SAFETY_FILTER_KEYS = frozenset(("name", "energy", "lyapunov", "threshold", "percentile", "source"))
GRAPH_KEYS = frozenset(("file", "sha256", "inputs", "outputs", "parity_max_abs_err"))
TENSOR_KEYS = frozenset(("name", "dtype", "shape"))
NORMALIZER_KEYS = frozenset(("obs_mean", "obs_std", "act_mean", "act_std", "ret_mean", "ret_std"))
REFERENCE_KEYS = frozenset(("file", "sha256"))
CARD_KEYS = frozenset(("file", "sha256"))
PLAN_KEYS = frozenset(("graph", "file", "sha256", "key", "tensorrt_version", "compute_capability", "precision"))
PRODUCER_KEYS = frozenset(("planner_node", "torch", "onnx", "opset", "python", "git_commit", "checkpoint", "dataset"))
DATASET_KEYS = frozenset(("sha256", "path"))


def _exact_keys(d, allowed: frozenset, where: str, mpath: Path) -> None:
    if not isinstance(d, dict):
        raise BundleError(f"{mpath}: {where}: expected a mapping, got {type(d).__name__}")
    unknown, missing = sorted(set(map(str, d)) - allowed), sorted(allowed - set(d))
    if unknown:
        raise BundleError(f"{mpath}: {where}: unknown keys {unknown} (this build knows {sorted(allowed)})")
    if missing:
        raise BundleError(f"{mpath}: {where}: missing keys {missing}")


def _check_schema(m: dict, mpath: Path) -> None:
    version = m["format_version"]
    _exact_keys(m, TOP_KEYS_V5 if version >= 5 else TOP_KEYS if version == 4 else TOP_KEYS_V3, "top level", mpath)
    if version >= 5:
        v = m["bundle_version"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BundleError(f"{mpath}: bundle_version must be an integer >= 1, got {v!r}")
    sf = m.get("safety_filter")
    if sf is not None:
        _exact_keys(sf, SAFETY_FILTER_KEYS, "safety_filter", mpath)
        for role in ("energy", "lyapunov"):
            if sf[role] not in (m.get("graphs") or {}):
                raise BundleError(f"{mpath}: safety_filter.{role}: graph {sf[role]!r} is not in graphs")
        try:
            ok = np.isfinite(float(sf["threshold"]))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise BundleError(f"{mpath}: safety_filter.threshold must be a finite number, got {sf['threshold']!r}")
    cr = m.get("critic")
    if cr is not None:
        _exact_keys(cr, CRITIC_KEYS, "critic", mpath)
        if cr["graph"] not in (m.get("graphs") or {}):
            raise BundleError(f"{mpath}: critic.graph: graph {cr['graph']!r} is not in graphs")
        if not (isinstance(cr["tasks"], list) and cr["tasks"] and all(isinstance(t, str) for t in cr["tasks"])):
            raise BundleError(f"{mpath}: critic.tasks must be a non-empty list of task names")
        for key, lo, hi in (("discount", 0.0, 1.0), ("weight", -np.inf, np.inf)):
            try:
                v = float(cr[key])
            except (TypeError, ValueError):
                v = float("nan")
            if not (np.isfinite(v) and lo <= v <= hi):
                raise BundleError(f"{mpath}: critic.{key} must be a finite number in [{lo}, {hi}], got {cr[key]!r}")
    _exact_keys(m["normalizer"], NORMALIZER_KEYS, "normalizer", mpath)
    if m["reference"] is not None:
        _exact_keys(m["reference"], REFERENCE_KEYS, "reference", mpath)
    kind = KINDS.get(m["planner"])
    if kind is None:
        raise BundleError(f"{mpath}: unknown planner kind {m['planner']!r}; valid: {', '.join(KINDS)}")
    _exact_keys(m["kind_config"], frozenset(kind.kind_config_keys), "kind_config", mpath)
    # A setting added to the kind after the bundle was made takes the kind's default (so a
    # deployed bundle keeps loading); a setting this build does not know is refused.
    _exact_keys({**kind.defaults, **m["planner_defaults"]}, frozenset(kind.defaults), "planner_defaults", mpath)
    _exact_keys(m["producer"], PRODUCER_KEYS, "producer", mpath)
    if m["producer"]["dataset"] is not None:
        _exact_keys(m["producer"]["dataset"], DATASET_KEYS, "producer.dataset", mpath)
    if not isinstance(m["graphs"], dict) or not m["graphs"]:
        raise BundleError(f"{mpath}: graphs: expected a non-empty mapping")
    for name, g in m["graphs"].items():
        _exact_keys(g, GRAPH_KEYS, f"graphs.{name}", mpath)
        for which in ("inputs", "outputs"):
            if not isinstance(g[which], list):
                raise BundleError(f"{mpath}: graphs.{name}.{which}: expected a list")
            for i, t in enumerate(g[which]):
                _exact_keys(t, TENSOR_KEYS, f"graphs.{name}.{which}[{i}]", mpath)
    if not isinstance(m["plans"], list):
        raise BundleError(f"{mpath}: plans: expected a list")
    for i, plan in enumerate(m["plans"]):
        _exact_keys(plan, PLAN_KEYS, f"plans[{i}]", mpath)


_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where the wheel has it


class _NoAliasLoader(_SafeBase):
    """safe_load that also refuses YAML anchors/aliases and duplicate keys. Our writer never emits
    either. A nest of aliases expands exponentially in whatever walks the result, and a duplicate
    key is silently overridden by the last one, so what a reviewer reads is not what loads.
    libyaml parses (a manifest in ~3 ms against ~35 ms of pure-Python parsing that held the GIL
    against the command clock while a swap was verified). An alias shows as a node reached twice;
    both are refused before construction."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        seen, stack = set(), [node]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                line = n.start_mark.line + 1 if n.start_mark else "?"
                raise yaml.YAMLError(f"YAML alias at line {line}: aliases are not allowed")
            seen.add(id(n))
            if isinstance(n, yaml.MappingNode):
                keys: set = set()
                for k, _ in n.value:
                    if isinstance(k, yaml.ScalarNode):
                        if k.value in keys:
                            line = k.start_mark.line + 1 if k.start_mark else "?"
                            raise yaml.YAMLError(f"duplicate key {k.value!r} at line {line}: keys must be unique")
                        keys.add(k.value)
                stack.extend(x for kv in n.value for x in kv)
            elif isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
        return self.construct_document(node)


def _inside(root: Path, rel: str, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{root}/manifest.yaml: {what}: file must be a non-empty relative path")
    p = (root / rel).resolve()
    if Path(rel).is_absolute() or root.resolve() not in p.parents:
        raise BundleError(f"{root}/manifest.yaml: {what}: path {rel!r} escapes the bundle directory")
    return p


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Bundle:
    root: Path
    manifest: dict
    signed_by: str | None = None   # the trusted key id whose signature verified (load_bundle(trust=...))

    @property
    def planner(self) -> str:
        return self.manifest["planner"]

    @property
    def version(self) -> int:
        """``bundle_version`` (0 for a format 3-4 bundle, which has none)."""
        return int(self.manifest.get("bundle_version", 0))

    def graph_path(self, name: str) -> Path:
        return _inside(self.root, self.manifest["graphs"][name]["file"], f"graphs.{name}")

    def io(self, name: str, which: str) -> list[TensorSpec]:
        return [TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in self.manifest["graphs"][name][which]]

    def normalizer(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float32) for k, v in self.manifest["normalizer"].items()}


def _check_onnx_io(path: Path, declared: dict, where: str) -> None:
    """The graph's own inputs/outputs must be the ones the manifest declares; no outside data."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and others
        raise BundleError(f"{path}: not a readable ONNX model ({e})") from e
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                _inside(path.parent, entry.value, f"{where} external data of {init.name}")
    type_names = {1: "float32", 7: "int64", 10: "float16"}
    for which, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        actual = []
        for v in values:
            t = v.type.tensor_type
            actual.append({"name": v.name, "dtype": type_names.get(t.elem_type, str(t.elem_type)),
                           "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]})
        want = [{"name": t["name"], "dtype": t["dtype"], "shape": list(t["shape"])} for t in declared[which]]
        if actual != want:
            raise BundleError(f"{path}: {which} {actual} do not match manifest {where}.{which} {want}")


def load_bundle(path: str | Path, check_graphs: bool = True, trust=None) -> Bundle:
    """Read and verify a bundle; raises BundleError naming what is wrong.

    ``trust`` (a ``signing.TrustStore``): the manifest's bytes must carry a signature by one of
    its keys (``signing.SignatureError``, a BundleError, otherwise). The signature is checked
    before the YAML is parsed, and the bytes checked are the bytes parsed."""
    root = Path(path)
    mpath = root / "manifest.yaml"
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (not a bundle directory)")
    raw = mpath.read_bytes()
    signed_by = None
    if trust is not None:
        from planner_node.runtime.signing import SIGNATURE_FILE, SignatureError, verify
        try:
            signed_by = verify(raw, root / SIGNATURE_FILE, trust)
        except SignatureError as e:
            raise BundleSignatureError(str(e), e.reason) from e
    try:
        m = yaml.load(raw.decode("utf-8"), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: invalid YAML ({e})") from e
    if not isinstance(m, dict):
        raise BundleError(f"{mpath}: expected a mapping")
    if m.get("format_version") not in READABLE_VERSIONS:
        hint = " (kind-specific fields moved under kind_config: `planner upgrade-bundle OLD --out NEW`)" \
            if m.get("format_version") == 2 else ""
        raise BundleError(f"{mpath}: format_version {m.get('format_version')!r} unsupported "
                          f"(this build reads {', '.join(map(str, READABLE_VERSIONS))}){hint}")
    if m.get("planner") not in KINDS:
        raise BundleError(f"{mpath}: unknown planner kind {m.get('planner')!r}; valid: {', '.join(KINDS)}")
    _check_schema(m, mpath)
    m.setdefault("safety_filter", None)  # format 3: no filter, no critic
    m.setdefault("critic", None)
    m["planner_defaults"] = {**KINDS[m["planner"]].defaults, **m["planner_defaults"]}
    if m["spec_hash"] != spec.SPEC_HASH:
        raise BundleError(f"{mpath}: spec_hash {m['spec_hash']!r} does not match this build's {spec.SPEC_HASH!r}")
    if list(m["joint_names"]) != list(spec.JOINT_NAMES):
        raise BundleError(f"{mpath}: joint_names differ from this robot's joint order")
    if [list(b) for b in m["obs_blocks"]] != [list(b) for b in spec.OBS_BLOCKS]:
        raise BundleError(f"{mpath}: obs_blocks differ from this build's observation layout")
    if abs(float(m["control_period_s"]) - spec.CONTROL_PERIOD_S) > 1e-9:
        raise BundleError(f"{mpath}: control_period_s {m['control_period_s']} != {spec.CONTROL_PERIOD_S}")
    for key, size in (("obs_mean", spec.OBS_DIM), ("obs_std", spec.OBS_DIM), ("act_mean", spec.ACTION_DIM),
                      ("act_std", spec.ACTION_DIM)):
        v = np.asarray(m["normalizer"].get(key, []), dtype=np.float64)
        if v.shape != (size,) or not np.all(np.isfinite(v)):
            raise BundleError(f"{mpath}: normalizer.{key} must be {size} finite numbers")
    b = Bundle(root, m, signed_by)
    for name, g in m["graphs"].items():
        for field in ("file", "sha256", "inputs", "outputs"):
            if field not in g:
                raise BundleError(f"{mpath}: graphs.{name} lacks {field!r}")
        p = _inside(root, g["file"], f"graphs.{name}")
        if not p.is_file():
            raise BundleError(f"{p}: missing (graphs.{name})")
        if sha256_file(p) != g["sha256"]:
            raise BundleError(f"{p}: sha256 mismatch (graphs.{name}): modified or corrupt")
        for which in ("inputs", "outputs"):
            for t in g[which]:
                if t.get("dtype") not in DTYPES or not all(isinstance(d, int) and d > 0 for d in t.get("shape", [])):
                    raise BundleError(f"{mpath}: graphs.{name}.{which}: bad tensor spec {t}")
        if check_graphs:
            _check_onnx_io(p, g, f"graphs.{name}")
    for i, plan in enumerate(m.get("plans", []) or []):
        p = _inside(root, plan.get("file", ""), f"plans[{i}]")
        if not p.is_file() or sha256_file(p) != plan.get("sha256"):
            raise BundleError(f"{p}: missing or sha256 mismatch (plans[{i}])")
    if m.get("card") is not None:   # format 5: the card is pinned too, so a signature covers its text
        _exact_keys(m["card"], CARD_KEYS, "card", mpath)
        p = _inside(root, m["card"]["file"], "card")
        if not p.is_file() or sha256_file(p) != m["card"]["sha256"]:
            raise BundleError(f"{p}: missing or sha256 mismatch (card): modified or corrupt")
    return b

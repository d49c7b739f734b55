"""The datasets committed under data/: every manifest verifies (format, spec, every shard present
and matching its name), the store stays within its size budget, and no orphan shard is kept."""
from pathlib import Path

import pytest

from planner_node.atomic import sha256_file
from planner_node.dataset import read_manifest

DATA = Path(__file__).resolve().parents[1] / "data"
BUDGET_MB = 150  # the repo's data budget (README "Data that does not fit the repo")
MANIFESTS = sorted(DATA.glob("*.json"))


def test_the_repo_holds_its_datasets():
    assert MANIFESTS, f"no dataset manifests under {DATA}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_manifest_verifies(manifest):
    meta = read_manifest(manifest)
    for e in meta["shards"]:
        shard = DATA / "shards" / f"{e['sha256']}.npz"
        assert shard.is_file(), f"{manifest.name}: shard {e['sha256'][:12]} is not committed"
        assert sha256_file(shard) == e["sha256"], f"{shard.name}: modified"
    assert meta["transitions"] == sum(e["transitions"] for e in meta["shards"])


def test_store_within_budget_and_every_shard_listed():
    shards = {p.name for p in (DATA / "shards").glob("*.npz")}
    listed = {f"{e['sha256']}.npz" for m in MANIFESTS for e in read_manifest(m)["shards"]}
    assert shards == listed, f"orphan shards: {sorted(shards - listed)[:3]}, missing: {sorted(listed - shards)[:3]}"
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size <= BUDGET_MB * 1e6, f"data/ holds {size / 1e6:.1f} MB, over the {BUDGET_MB} MB budget"

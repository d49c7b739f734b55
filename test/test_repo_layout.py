"""The repo as a product: the weight policy's budgets (docs/data.md "What is committed"), and the
folders that say what matters: config/train/ holds only configs a doc or recipe names, bench/
only what a user or CI runs (each listed in README), experiments/ only scripts its index lists."""
import re
import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
#: (path prefix, bytes per file, bytes in all); data/'s own budget is test_committed_data.py's.
BUDGETS = {"runs/": (15 * MB, 100 * MB), "bundles/": (15 * MB, 25 * MB), "results/": (2 * MB, 15 * MB)}
OTHER_FILE_MAX = 1 * MB
BENCH_MAX = 12


def tracked() -> dict[str, int]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {p: (ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file()}


def docs_text() -> str:
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    return "\n".join(p.read_text() for p in pages)


def test_tracked_files_keep_the_weight_policy():
    files = tracked()
    totals, over = defaultdict(int), []
    for path, size in files.items():
        prefix = next((p for p in BUDGETS if path.startswith(p)), None)
        if path.startswith("data/"):
            continue
        limit = BUDGETS[prefix][0] if prefix else OTHER_FILE_MAX
        if size > limit:
            over.append(f"{path}: {size / MB:.1f} MB > {limit / MB:.0f} MB per file")
        if prefix:
            totals[prefix] += size
    over += [f"{p}: {totals[p] / MB:.1f} MB > {b[1] / MB:.0f} MB in all" for p, b in BUDGETS.items() if totals[p] > b[1]]
    assert not over, "over the weight policy (docs/data.md):\n" + "\n".join(over)


def test_every_committed_run_is_named_in_the_docs():
    runs = {p.split("/")[1] for p in tracked() if p.startswith("runs/")}
    text = docs_text()
    unnamed = sorted(r for r in runs if not re.search(rf"runs/{re.escape(r)}\b", text))
    assert not unnamed, f"committed runs no doc names (docs/data.md: what is committed): {unnamed}"


def test_train_configs_are_the_ones_docs_or_recipes_name():
    named = docs_text() + (ROOT / "Makefile").read_text() + "".join(
        p.read_text() for p in (ROOT / "bench").glob("*.sh"))
    configs = sorted(p.name for p in (ROOT / "config" / "train").glob("*.yaml"))
    unnamed = [c for c in configs if f"config/train/{c}" not in named]
    assert not unnamed, f"config/train/ holds configs no doc or recipe names (move them to experiments/configs/): {unnamed}"


def test_bench_holds_what_users_run_each_listed_in_readme():
    scripts = sorted(p.name for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh"))
    assert len(scripts) <= BENCH_MAX, f"bench/ has {len(scripts)} scripts (at most {BENCH_MAX}): {scripts}"
    readme = (ROOT / "README.md").read_text()
    assert not [s for s in scripts if f"bench/{s}" not in readme], "bench/ scripts missing from README's table"


def test_every_experiment_script_and_config_is_indexed():
    index = (ROOT / "experiments" / "README.md").read_text()
    files = [p for p in (ROOT / "experiments").rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ".yaml")]
    missing = sorted(str(p.relative_to(ROOT / "experiments")) for p in files
                     if f"`{p.relative_to(ROOT / 'experiments')}`" not in index)
    assert not missing, f"experiments/README.md does not list: {missing}"

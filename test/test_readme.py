"""README as a contract: its train-export-run cycle runs as written, every command it shows is run
here in a tiny form (or by the test named for it), every shipped bundle serves the commands the
README shows for bundles, and every link in README and docs/ resolves."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLANNER = str(Path(sys.executable).with_name("planner"))
BUNDLES = sorted(p.parent for p in (ROOT / "bundles").glob("*/manifest.yaml"))

#: README commands run elsewhere, and where. A command the README gains must be added to the
#: tiny cycle or here, naming the test or check that runs it.
COVERED = {
    "make demo": "test_bringup_and_controller.py (the demo sequence) and make demo itself",
    "make test": "CI (.ci/run) runs it",
    "ros2 launch": ".ci/colcon_check.sh (the launch install and its defaults)",
    "ros2 param": "test_hil.py::test_hot_swap_mid_run_keeps_commanding (the same parameter service)",
    "ros2 topic": "test_remote.py (the same /cmd_vel topic)",
    "planner task": "test_remote.py::test_swap_and_task_drive_a_running_stack",
    "planner swap": "test_remote.py::test_swap_and_task_drive_a_running_stack",
    "planner up": "test_readme.py (the cycle, test_planner_up_as_the_readme_shows), test_launch_default.py (no arguments)",
    "planner verify": "test_readme.py::test_bundle_commands_on_every_shipped_bundle",
    "planner view": "test_view.py (the demo recorded through planner view; --view web on localhost)",
    "planner data": "test_view.py::test_data_view_writes_an_episode_that_reads_back",
    ".venv/bin/rerun demo_out/demo.rrd": "test_view.py::test_web_viewer_in_headless_chromium_shows_the_humanoid (the wheel's viewer)",
}


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(blocks: list[str]) -> list[str]:
    """Each command line of these bash blocks, comments and variable assignments left out."""
    out = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#") and not re.match(r"^[A-Z_]+=\S+$", line):
                out.append(line)
    return out


def key(cmd: str) -> str:
    """`planner SUB`, `make TARGET`, `ros2 VERB` of a command line."""
    words = shlex.split(cmd.replace("$P ", "planner ").replace(".venv/bin/planner ", "planner "))
    return " ".join(words[:2])


def cycle_block() -> str:
    return next(b for b in code_blocks(README.read_text()) if "--recipe tiny" in b)


def run(args, timeout=600, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def test_every_readme_command_is_run_somewhere():
    cycle = {key(c) for c in commands([cycle_block()])}
    missing = sorted({key(c) for c in commands(code_blocks(README.read_text()))} - cycle - set(COVERED))
    assert not missing, f"README commands with no tiny form in a test: {missing}"
    assert len(README.read_text().splitlines()) <= 300


def test_readme_cycle_runs_as_written(tmp_path, ros_domain):
    """The tiny train-export-run cycle, line for line, with /tmp/ moved into this test's folder."""
    script = cycle_block().replace("/tmp/", f"{tmp_path}/").replace("P=.venv/bin/planner", f"P={PLANNER}")
    r = run(["bash", "-euo", "pipefail", "-c", script], timeout=900, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert (tmp_path / "bundles" / "tiny" / "manifest.yaml").is_file()
    assert "onnxruntime" in r.stdout and "OK (chunk" in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_commands_on_every_shipped_bundle(bundle):
    """`planner verify` and `planner bench` with its default backends work on each shipped bundle:
    a backend a bundle cannot serve (no torch weights, no GPU) is skipped with its reason."""
    r = run([PLANNER, "verify", str(bundle)])
    assert r.returncode == 0 and ": OK (" in r.stdout, r.stdout + r.stderr
    r = run([PLANNER, "bench", "--bundle", str(bundle), "--ticks", "5"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"^onnxruntime", r.stdout, flags=re.M), r.stdout
    assert "tensorrt: skipped (" in r.stdout or re.search(r"^tensorrt", r.stdout, flags=re.M), r.stdout
    r = run([PLANNER, "eval", "--bundle", str(bundle), "--task", "stand", "--episodes", "1", "--steps", "10",
             "--push-every", "0"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_planner_up_as_the_readme_shows(tmp_path, ros_domain):
    """`planner up humanoid --lockstep --duration S --bundle bundles/hgap`, as the README shows it (with no
    arguments: test_launch_default.py): both nodes run for the duration and stop cleanly."""
    r = run([PLANNER, "up", "humanoid", "--lockstep", "--duration", "6", "--bundle", "bundles/hgap",
             "--log-dir", str(tmp_path)], env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for h in re.findall(r"^#+ (.*)$", md.read_text(), flags=re.M):
        a = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        out.add(a)
    return out


def test_every_docs_link_resolves():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "experiments").glob("*.md")),
             *sorted((ROOT / "results").glob("*.md"))]
    bad = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.is_file() and anchor not in anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    # Backticked repo paths in the user docs exist too (scripts, configs, bundles, result files).
    for page in [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "planners").glob("*.md"))]:
        for p in re.findall(r"`((?:bench|experiments|config|bundles|docs|results)/[\w./-]+)`", page.read_text()):
            if not (ROOT / p).exists():
                bad.append(f"{page.relative_to(ROOT)}: `{p}` (no such file)")
    assert not bad, "\n".join(bad)

"""Package metadata is consistent (stdlib only: this file also runs under `colcon test`)."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_and_real_maintainer():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.get("format") == "3"
    assert pkg.findtext("name") == "planner_node"
    m = pkg.find("maintainer")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", m.get("email"))
    assert pkg.find("export/build_type").text == "ament_python"
    # setup.py reads its version from package.xml rather than repeating it
    assert "package.xml" in (ROOT / "setup.py").read_text()
    assert not re.search(r"version\s*=\s*['\"]\d", (ROOT / "setup.py").read_text())


def test_exec_depends_cover_ros_imports():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    deps = {e.text for e in pkg.findall("exec_depend")}
    used = set()
    for py in list(ROOT.glob("planner_node/**/*.py")) + list(ROOT.glob("sim/**/*.py")) + list(ROOT.glob("launch/*.py")):
        for mod in re.findall(r"^\s*(?:from|import)\s+(\w+_msgs|\w+_srvs|\w+_interfaces|ament_index_python|rclpy|launch_ros|launch)\b",
                              py.read_text(), re.M):
            used.add(mod)
    assert used <= deps, f"imported but not in package.xml exec_depend: {sorted(used - deps)}"


def test_layout_imports_as_subpackages():
    setup = (ROOT / "setup.py").read_text()
    for sub in ("models", "export", "sim"):
        assert f'f"{{PACKAGE}}.{sub}": "{sub}"' in setup
        assert (ROOT / sub / "__init__.py").is_file()
    assert (ROOT / "resource" / "planner_node").is_file()


def _setup_kwargs() -> dict:
    """What setup.py passes to setuptools.setup (captured, not installed)."""
    import os
    import runpy

    import setuptools
    captured = {}
    real, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kw: captured.update(kw)
    os.chdir(ROOT)  # as pip and colcon run it
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    return captured


def test_every_subpackage_is_installed():
    """A hand-written package list once left out planner_node.runtime (no runtime when installed)."""
    kw = _setup_kwargs()
    on_disk = set()
    for name, folder in (("planner_node", "planner_node"), ("planner_node.models", "models"),
                         ("planner_node.export", "export"), ("planner_node.sim", "sim")):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *rel.parts]))
    assert "planner_node.runtime" in on_disk
    assert on_disk == set(kw["packages"]), sorted(on_disk ^ set(kw["packages"]))


def _pins(lines):
    out = {}
    for ln in lines:
        ln = ln.split("#")[0].strip()
        if ln:
            name = re.split(r"[<>=!~\[ ]", ln, maxsplit=1)[0].lower()
            out[name] = ln[len(name):]
    return out


def test_runtime_dependencies_declared_with_requirements_pins():
    kw = _setup_kwargs()
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    deps = _pins(d for d in kw["install_requires"] if d != "setuptools")
    for must in ("mujoco", "dm-control", "onnxruntime", "onnx", "numpy", "pyyaml", "ros-rclpy"):
        assert must in deps, f"install_requires lacks {must}"
    assert "torch" not in deps, "torch is a training dependency (extra 'train'), not a run-time one"
    for name, pin in deps.items():
        assert req.get(name) == pin, f"{name}: install_requires pins {pin!r}, requirements.txt {req.get(name)!r}"
    # package.xml: the same dependencies, the same pins (format-3 version attributes).
    pkg = ET.parse(ROOT / "package.xml").getroot()
    xml = {e.text: e.attrib for e in pkg.findall("exec_depend")}
    for name, pin in deps.items():
        key = name[4:].replace("-", "_") if name.startswith("ros-") else \
            {"pyyaml": "python3-yaml"}.get(name, f"python3-{name}")
        assert key in xml, f"package.xml lacks exec_depend {key} ({name})"
        want = {}
        for op, v in re.findall(r"(==|>=|<=|<|>)\s*([\w.]+)", pin):
            want[{"==": "version_eq", ">=": "version_gte", "<=": "version_lte", "<": "version_lt",
                  ">": "version_gt"}[op]] = v
        assert xml[key] == want, f"package.xml {key}: {xml[key]} but requirements.txt pins {pin!r}"


def test_shipped_bundle_is_installed_to_share():
    files = dict(_setup_kwargs()["data_files"])
    shipped = files.get("share/planner_node/bundles/default", [])
    assert "bundles/default/manifest.yaml" in shipped
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bundles" / "default").iterdir())
    assert sorted(shipped) == on_disk

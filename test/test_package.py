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

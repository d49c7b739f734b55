"""planner_node: learned trajectory planners as real-time MPC on a 56-DoF humanoid (ROS 2)."""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "planner_node"
HERE = Path(__file__).resolve().parent
# One version, in one place: package.xml.
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

# models/, export/, sim/ live at the repo root (design card) but import as planner_node.*; every
# subpackage is found, none listed by hand (a hand list once left out planner_node.runtime).
SUBTREES = {PACKAGE: PACKAGE, f"{PACKAGE}.models": "models", f"{PACKAGE}.export": "export", f"{PACKAGE}.sim": "sim"}
PACKAGES, PACKAGE_DIR = [], {}
for name, folder in SUBTREES.items():
    PACKAGES.append(name)
    PACKAGE_DIR[name] = folder
    for sub in find_packages(folder):
        PACKAGES.append(f"{name}.{sub}")
        PACKAGE_DIR[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

# What the node, the bridge and the CLI need at run time (no torch: that is the `train` extra).
# The pins are requirements.txt's, read from there so they cannot drift apart.
RUNTIME = ["numpy", "pyyaml", "cryptography", "mujoco", "dm-control", "protobuf", "onnx", "onnxruntime", "tqdm", "h5py",
           "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs", "ros-nav-msgs",
           "ros-geometry-msgs", "ros-trajectory-msgs", "ros-diagnostic-msgs", "ros-rosgraph-msgs", "ros-std-srvs"]


def pinned(names):
    lines = [ln.split("#")[0].strip() for ln in (HERE / "requirements.txt").read_text().splitlines()]
    reqs = {re.split(r"[<>=!~\[ ]", ln, maxsplit=1)[0].lower(): ln for ln in lines if ln}
    missing = [n for n in names if n not in reqs]
    if missing:
        raise SystemExit(f"setup.py: run-time dependencies {missing} are not in requirements.txt")
    return [reqs[n] for n in names]


SHIPPED_BUNDLE = "bundles/default"

setup(
    name=PACKAGE,
    version=VERSION,
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        # the public half of the project's test key (the node's default trusted_keys); never the private key
        (f"share/{PACKAGE}/config/keys", glob("config/keys/*.pub")),
        # The shipped bundle: the default of `ros2 launch`, `planner up` and the node's bundle_path.
        (f"share/{PACKAGE}/{SHIPPED_BUNDLE}", sorted(glob(f"{SHIPPED_BUNDLE}/*"))),
    ],
    install_requires=["setuptools", *pinned(RUNTIME)],
    extras_require={
        "test": ["pytest", "pytest-timeout", *pinned(["mcap-ros2-support"])],
        # `planner view`, `planner demo --rrd`, `planner data view` (the viewer ships inside the wheel)
        "view": pinned(["rerun-sdk"]),
        "train": ["torch==2.13.0", "matplotlib", *pinned(["ray"])],
        "gpu": ["onnxruntime-gpu", "tensorrt"],
    },
    zip_safe=False,
    maintainer="planner_node maintainers",
    maintainer_email="planner-node@robotics-lab.org",
    description="Learned trajectory planners (H-GAP, TAP, Diffuser) as real-time MPC for a humanoid",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "planner = planner_node.cli:main",
        "planner_node = planner_node.ros.node:main",
        "sim_bridge = planner_node.ros.bridge:main",
        "planner_view = planner_node.ros.view:main",  # needs the view extra; says so without it
    ]},
)

"""planner_node: learned trajectory planners as real-time MPC on a 56-DoF humanoid (ROS 2)."""
import re
from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "planner_node"
# One version, in one place: package.xml.
VERSION = re.search(r"<version>([^<]+)</version>", Path(__file__).with_name("package.xml").read_text()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    # models/, export/, sim/ live at the repo root (design card) but import as planner_node.*
    packages=[PACKAGE, f"{PACKAGE}.models", f"{PACKAGE}.export", f"{PACKAGE}.sim"],
    package_dir={PACKAGE: PACKAGE, f"{PACKAGE}.models": "models",
                 f"{PACKAGE}.export": "export", f"{PACKAGE}.sim": "sim"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml", "mujoco", "h5py", "tqdm"],
    extras_require={
        "test": ["pytest", "pytest-timeout"],
        "train": ["torch==2.13.0", "onnx", "matplotlib"],
        "gpu": ["onnxruntime-gpu", "tensorrt"],
    },
    zip_safe=True,
    maintainer="planner_node maintainers",
    maintainer_email="planner-node@robotics-lab.org",
    description="Learned trajectory planners (H-GAP, TAP, Diffuser) as real-time MPC for a humanoid",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "planner = planner_node.cli:main",
        "planner_node = planner_node.node:main",
        "sim_bridge = planner_node.sim.bridge:main",
    ]},
)

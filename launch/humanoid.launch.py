"""ros2 launch planner_node humanoid.launch.py [bundle:=DIR] [backend:=...] [task:=...] [lockstep:=true]

Starts the MuJoCo sim bridge and the planner node with config/humanoid.yaml; the arguments, their
defaults (``bundle``: the shipped bundle in share/planner_node/bundles) and their mapping onto
parameters come from planner_node.ros.launch_description, which `planner up` uses too.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from planner_node.ros.launch_description import ARGUMENTS, NODES, PARAMS_FILE, argument_defaults, node_overrides


def _nodes(context):
    values = {a: LaunchConfiguration(a).perform(context) for a in ARGUMENTS}
    params = os.path.join(get_package_share_directory("planner_node"), "config", PARAMS_FILE)
    overrides = node_overrides(values)
    return [Node(package="planner_node", executable=exe, name=name, output="screen",
                 parameters=[params, overrides[name]]) for name, exe in NODES.items()]


def generate_launch_description():
    defaults = argument_defaults()
    args = [DeclareLaunchArgument(a, default_value=defaults[a]) for a in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_nodes)])

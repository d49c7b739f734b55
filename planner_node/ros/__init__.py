"""ROS 2 shells: the planner node, the sim bridge, bring-up, the demo and their helpers. The only
place rclpy is imported (`.importlinter`)."""

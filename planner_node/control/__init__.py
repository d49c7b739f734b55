"""The ROS-free control tick: state -> observation -> plan -> action filter -> output guard -> command,
with what a state must satisfy and the node's parameter table. Never imports rclpy or torch (`.importlinter`)."""

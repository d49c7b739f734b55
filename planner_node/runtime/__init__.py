"""ROS-free runtime: engines, bundles, planners on numpy. Never imports torch."""

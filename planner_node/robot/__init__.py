"""The robot definition a deployed controller needs, apart from the simulator tooling: the MJCF
build and every MJCF name (`humanoid`), the one observation builder (`observation`), the tasks
as pure reward functions of observations (`tasks`). Imports numpy, mujoco and dm_control
(to build the MJCF), never torch, the models, export or the simulator tooling."""

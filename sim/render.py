"""Headless rendering to MP4 (MUJOCO_GL=egl or osmesa; imageio-ffmpeg for encoding)."""
from __future__ import annotations

import os


class RenderUnavailable(RuntimeError):
    pass


class VideoRecorder:
    """Collect one frame per control step from the tracking camera; write MP4 on close."""

    def __init__(self, model, path: str, width: int = 480, height: int = 360, camera: str = "side"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco
        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as e:  # noqa: BLE001 - GL backends raise many kinds
            raise RenderUnavailable(
                f"cannot render headless with MUJOCO_GL={os.environ['MUJOCO_GL']} ({e}); install "
                "libegl1 (egl) or libosmesa6 (MUJOCO_GL=osmesa)") from e
        self._camera = camera
        self._frames = []
        self.path = path

    def add(self, env) -> None:
        self._renderer.update_scene(env.data, camera=self._camera)
        self._frames.append(self._renderer.render().copy())

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()  # free the GL context now, not at interpreter exit
            self._renderer = None
        if not self._frames:
            return
        try:
            import imageio.v2 as imageio
        except ImportError as e:
            raise RenderUnavailable("writing MP4 needs imageio and imageio-ffmpeg") from e
        from planner_node.atomic import atomic_path
        with atomic_path(self.path, suffix=".mp4") as tmp:
            imageio.mimwrite(tmp, self._frames, fps=int(round(1 / 0.03)), macro_block_size=8)
        self._frames = []

"""Choice of MuJoCo's OpenGL backend; must run before ``import mujoco``."""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections.abc import Callable
from typing import Any


def set_default_gl_backend() -> str | None:
    """Default ``MUJOCO_GL`` to ``osmesa`` on a Linux machine without a display.

    An explicit ``MUJOCO_GL`` (``egl`` on a GPU machine, ``glfw`` with a display) is left alone;
    so is any machine with ``DISPLAY`` or ``WAYLAND_DISPLAY`` set, and macOS and Windows, whose
    defaults work. MuJoCo reads the variable once, when it is first imported.

    Returns:
        The value of ``MUJOCO_GL`` afterwards (None where it stays unset).
    """
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if "MUJOCO_GL" not in os.environ and sys.platform.startswith("linux") and not has_display:
        os.environ["MUJOCO_GL"] = "osmesa"
    return os.environ.get("MUJOCO_GL")


def close_at_exit(obj: Any) -> Callable[[], None]:
    """Closes ``obj`` at interpreter exit, before the exit hooks that GL backends registered earlier.

    MuJoCo's EGL backend terminates its display in an exit hook registered when the first GL
    context is made; a renderer freed after that (by ``__del__`` during shutdown) raises
    ``EGLError``. Call this right after the renderer exists: exit hooks run last-in, first-out.
    Holds only a weak reference, so ``obj`` can still be garbage-collected.

    Args:
        obj: Anything with a ``close()`` method.

    Returns:
        The hook, for ``atexit.unregister`` once ``obj`` is closed by hand.
    """
    ref = weakref.ref(obj)

    def hook() -> None:
        target = ref()
        if target is not None:
            target.close()

    atexit.register(hook)
    return hook

import os
import sys

# MuJoCo picks its GL backend when first imported: offscreen OSMesa unless the environment says otherwise.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")

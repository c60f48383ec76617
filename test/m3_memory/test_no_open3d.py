"""The training, rendering and query modules import without open3d (a CUDA machine may lack it):
open3d is imported only inside the functions that use it."""

import subprocess
import sys

MODULES = ["m3_memory.device", "m3_memory.render", "m3_memory.render.referee", "m3_memory.training.trainer",
           "m3_memory.training.strategy", "m3_memory.training.build", "m3_memory.training.options",
           "m3_memory.training.distill", "m3_memory.training.init", "m3_memory.memory.artifact",
           "m3_memory.memory.attention", "m3_memory.query.api", "m3_memory.query.render", "m3_memory.query.eval",
           "m3_memory.cli"]

BLOCKER = """
import sys
sys.modules["open3d"] = None  # `import open3d` now raises ImportError
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
assert sys.modules["open3d"] is None
"""


def test_training_render_and_query_modules_import_without_open3d():
    done = subprocess.run([sys.executable, "-c", BLOCKER, *MODULES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_blocker_blocks():
    done = subprocess.run([sys.executable, "-c", BLOCKER, "m3_memory.synth.scene"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "open3d" in done.stderr

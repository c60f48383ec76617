"""Training the memory: initialisation from RGB-D (training loop, strategy and config follow)."""

from m3_memory.training.init import SH_C0, init_from_rgbd, rgb_to_sh

__all__ = ["SH_C0", "init_from_rgbd", "rgb_to_sh"]

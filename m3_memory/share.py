"""Files the project installs beside its Python packages: ``urdf/``, ``config/``, ``launch/``
(the ROS 2 package's share directory, or the source tree in a checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

from m3_memory.errors import InputError


def share_roots() -> list[Path]:
    """Where installed data may be: the source tree, the ament index's share directory of
    m3_memory (colcon installs), and share/m3_memory under the Python prefix (pip)."""
    roots = [Path(__file__).resolve().parents[1]]  # the repository root in a source checkout
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            roots.append(Path(get_package_share_directory("m3_memory")))
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return [*roots, Path(sys.prefix) / "share" / "m3_memory"]


def share_file(relative: str) -> Path:
    """``relative`` (e.g. "urdf/b1_z1.urdf") in the source tree or an installed share directory."""
    for root in share_roots():
        if (root / relative).is_file():
            return root / relative
    raise InputError(relative, "not found in the source tree, in the ament index, nor in share/m3_memory")

"""CI: do m3's core dependencies resolve to wheels for a Jetson (aarch64, Python 3.10)?

Runs ``pip install --dry-run --only-binary=:all: --platform manylinux2014_aarch64`` (plus the
manylinux_2_28/2_35 tags a JetPack 6 / Ubuntu 22.04 glibc accepts) ``--python-version 3.10``
on pyproject.toml's core dependencies with ``--no-deps``: each must have a wheel for a Jetson.
Their own dependencies are not resolved here, because pip evaluates environment markers for
the machine it runs on, not for ``--platform`` (on an x86_64 runner torch then asks for its
x86_64-only CUDA wheels). Through pip's configured index (a local mirror works
offline). SOURCE_ONLY lists the ones published as source only for aarch64: pip builds them on
the Jetson (a C/C++ compiler is needed), so they are left out of this wheels-only check and named. When the index cannot be reached it prints why and exits 0: a network problem is not
a failure of m3. Exit 1 when the dependencies do not resolve.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_35_aarch64")
SOURCE_ONLY = {"toppra": "no aarch64 wheels (toppra 0.6.x): built from source on the Jetson (needs a C compiler, Cython)"}
NETWORK = ("NewConnectionError", "Max retries exceeded", "Could not fetch URL", "Temporary failure in name resolution",
           "Network is unreachable", "ConnectTimeout", "ReadTimeout", "Connection refused")


def name(requirement: str) -> str:
    """The project name of a requirement such as ``numpy>=1.24,<3``."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def main() -> int:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if name(dep) in SOURCE_ONLY:
            print(f"ci: {dep}: {SOURCE_ONLY[name(dep)]}")
    deps = [d for d in deps if name(d) not in SOURCE_ONLY]
    with tempfile.TemporaryDirectory() as target:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               *[f"--platform={p}" for p in PLATFORMS], "--python-version", "3.10", "--no-deps", "--target", target, *deps]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            print("ci: aarch64 dependency check skipped: the package index did not answer within 900 s")
            return 0
    out = done.stdout + done.stderr
    if done.returncode == 0:
        print("ci: every core dependency has a wheel for aarch64 / Python 3.10:",
              next((line for line in out.splitlines() if line.startswith("Would install")), "ok"))
        return 0
    if any(word in out for word in NETWORK):
        print("ci: aarch64 dependency check skipped: the package index is unreachable "
              f"({next(line for line in out.splitlines() if any(w in line for w in NETWORK)).strip()[:200]})")
        return 0
    print("ci: core dependencies do NOT resolve for aarch64 / Python 3.10:\n" +
          "\n".join(line for line in out.splitlines() if not line.startswith("WARNING: Location"))[-3000:], file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

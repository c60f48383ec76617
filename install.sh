#!/usr/bin/env bash
# Install m3 into the current Python environment, with what it needs from the system:
# the libusb-1.0 library that open3d and pyrealsense2 load. `./install.sh --test` adds the
# test tools. RealSense recordings need the `realsense` extra (pyrealsense2), installed where
# pyrealsense2 has wheels (not aarch64 / Jetson on Python >= 3.10: there m3 reads every other format).
set -euo pipefail
cd "$(dirname "$0")"
extras="realsense,view"
if [ "${1:-}" = "--test" ]; then extras="realsense,view,test"; fi
if [ "$(uname -m)" = "aarch64" ]; then extras="${extras#realsense}"; extras="${extras#,}"; fi

if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0'; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "install.sh: installing libusb-1.0-0 (needed by open3d and pyrealsense2)"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "install.sh: libusb-1.0 not found; install it with your system's package manager" >&2
    exit 1
  fi
fi
python -m pip install --disable-pip-version-check -q -e ".${extras:+[$extras]}"

"""The repository root is both a pip project and the ament_python package m3_memory."""

import xml.etree.ElementTree as ET
from pathlib import Path

import tomllib

import m3_memory

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_and_pyproject_agree():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.get("format") == "3" and pkg.findtext("name") == "m3_memory"
    assert pkg.find("export/build_type").text == "ament_python"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "m3_memory"
    assert pkg.findtext("version") == project["version"] == m3_memory.__version__
    assert project["scripts"]["m3"] == "m3_memory.cli:main"
    assert (ROOT / "resource" / "m3_memory").is_file()


def test_interface_package_is_visible_to_colcon():
    pkg = ET.parse(ROOT / "m3_msgs" / "package.xml").getroot()
    assert pkg.findtext("name") == "m3_msgs"
    assert pkg.find("export/build_type").text == "ament_cmake"
    assert "project(m3_msgs)" in (ROOT / "m3_msgs" / "CMakeLists.txt").read_text()


def test_core_never_imports_ros():
    for path in (ROOT / "m3_memory").rglob("*.py"):
        if "ros" in path.relative_to(ROOT / "m3_memory").parts[:1]:
            continue
        text = path.read_text()
        assert "import rclpy" not in text and "from rclpy" not in text, path

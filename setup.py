"""ament_python entry for colcon; pip uses pyproject.toml. Both describe the same package."""
from glob import glob

from setuptools import find_packages, setup

package_name = "m3_memory"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["m3_memory", "m3_memory.*", "m3_grasp", "m3_grasp.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + package_name + "/urdf", glob("urdf/*")),
    ],
    package_data={"m3_memory.foundation": ["fixture_data/*"], "m3_memory.render": ["csrc/*.cpp"],
                  "m3_memory.query": ["csrc/*.cpp"]},
    zip_safe=True,
    python_requires=">=3.10",  # here, not in pyproject.toml: colcon reads setup.py and cannot parse the SpecifierSet setuptools >= 61 makes of requires-python
    entry_points={"console_scripts": ["m3 = m3_memory.cli:main",
                                      # ROS 2 nodes (ros2 run m3_memory <name>); pyproject.toml lists them too
                                      "m3_mapping_node = m3_memory.ros.mapping_node:main",
                                      "m3_query_node = m3_memory.ros.query_node:main",
                                      "m3_grasp_node = m3_grasp.ros.grasp_node:main"]},
)

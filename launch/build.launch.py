"""The mapping node: the BuildMemory action at /m3_mapping/build_memory.

    ros2 launch m3_memory build.launch.py [params_file:=FILE] [output_dir:=DIR] [model:=clip] [use_sim_time:=true]

Parameters come from config/mapping.yaml (or params_file); output_dir and model, when given,
override those two. use_sim_time: stamp live recordings with /clock (a bag played with --clock).
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

SHARE = Path(__file__).resolve().parents[1]  # share/m3_memory when installed, the repository in a checkout
OVERRIDES = {"output_dir": "folder for memories and live recordings", "model": "foundation model (clip, siglip, dinov2)"}


def mapping_node(context: LaunchContext) -> list[Node]:
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    return [Node(package="m3_memory", executable="m3_mapping_node", name="m3_mapping", output="screen",
                 parameters=[LaunchConfiguration("params_file").perform(context), {k: v for k, v in given.items() if v},
                             {"use_sim_time": sim_time}])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(SHARE / "config" / "mapping.yaml"),
                              description="parameters of the mapping node"),
        *(DeclareLaunchArgument(name, default_value="", description=f"{text}; '' = params_file's")
          for name, text in OVERRIDES.items()),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (simulation, bag replay)"),
        OpaqueFunction(function=mapping_node),
    ])

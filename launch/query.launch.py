"""The query node: loads a memory and serves the QueryText service at /m3_query/query_text.

    ros2 launch m3_memory query.launch.py memory:=scene.m3 [target_frame:=base_link] [params_file:=FILE] [use_sim_time:=true]

Parameters come from config/query.yaml (or params_file); the other arguments, when given,
override single parameters.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

SHARE = Path(__file__).resolve().parents[1]  # share/m3_memory when installed, the repository in a checkout
OVERRIDES = {"memory": "the *.m3 memory to load", "model": "foundation model the memory was built with",
             "world_frame": "tf frame of the memory's coordinates", "target_frame": "frame of the returned targets"}


def query_node(context: LaunchContext) -> list[Node]:
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    return [Node(package="m3_memory", executable="m3_query_node", name="m3_query", output="screen",
                 parameters=[LaunchConfiguration("params_file").perform(context), {k: v for k, v in given.items() if v},
                             {"use_sim_time": sim_time}])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(SHARE / "config" / "query.yaml"),
                              description="parameters of the query node"),
        *(DeclareLaunchArgument(name, default_value="", description=f"{text}; '' = params_file's")
          for name, text in OVERRIDES.items()),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (simulation, bag replay)"),
        OpaqueFunction(function=query_node),
    ])

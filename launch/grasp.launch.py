"""The grasp node: the Grasp action at /m3_grasp/grasp (dry-run backend unless told otherwise).

    ros2 launch m3_memory grasp.launch.py memory:=scene.m3 [backend:=sim] [params_file:=FILE] [use_sim_time:=true]

Parameters come from config/grasp.yaml (or params_file); the other arguments, when given,
override single parameters. The robot description and robot.yaml are the installed ones.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

SHARE = Path(__file__).resolve().parents[1]  # share/m3_memory when installed, the repository in a checkout
OVERRIDES = {"memory": "the *.m3 memory (scene and text goals)", "model": "foundation model the memory was built with",
             "backend": "dry-run, sim or unitree", "world_frame": "tf frame of the memory's coordinates"}


def grasp_node(context: LaunchContext) -> list[Node]:
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    robot = {"urdf": str(SHARE / "urdf" / "b1_z1.urdf"), "robot_config": str(SHARE / "config" / "robot.yaml")}
    return [Node(package="m3_memory", executable="m3_grasp_node", name="m3_grasp", output="screen",
                 parameters=[LaunchConfiguration("params_file").perform(context), robot,
                             {k: v for k, v in given.items() if v}, {"use_sim_time": sim_time}])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(SHARE / "config" / "grasp.yaml"),
                              description="parameters of the grasp node"),
        *(DeclareLaunchArgument(name, default_value="", description=f"{text}; '' = params_file's")
          for name, text in OVERRIDES.items()),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (simulation, bag replay)"),
        OpaqueFunction(function=grasp_node),
    ])

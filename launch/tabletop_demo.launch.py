"""The tabletop demo: robot_state_publisher with urdf/b1_z1.urdf, the query node and the grasp node.

    ros2 launch m3_memory tabletop_demo.launch.py memory:=scene.m3 [sim:=true] [rviz:=true] [use_sim_time:=true]

On the robot, /joint_states (Z1 driver) and map -> base_link (lidar odometry) come from the
robot's own nodes. With sim:=true (no robot) zero joint states are published and base_link
stands still in sim_frame (default map, REP-105; the memory's frame) where m3's synthetic tabletop
puts the B1 (m3_memory.synth.scene.ROBOT_STANCE). The query and grasp launch files are included
each in its own scope, so each node gets its own params file (query_params_file, grasp_params_file).
rviz:=true opens RViz with config/m3.rviz (robot, tf, the latched heatmap and target marker).
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from m3_memory.synth.scene import ROBOT_STANCE

SHARE = Path(__file__).resolve().parents[1]  # share/m3_memory when installed, the repository in a checkout
SHARED = {"memory": "the *.m3 memory", "model": "foundation model the memory was built with",
          "world_frame": "tf frame of the memory's coordinates", "use_sim_time": "use /clock (simulation, bag replay)"}


def scoped_include(name: str) -> GroupAction:
    """launch/<name>.launch.py in a scope of its own: the launch configurations it sets (its
    params_file above all) do not leak into the next include."""
    arguments = {**{k: LaunchConfiguration(k) for k in SHARED}, "params_file": LaunchConfiguration(f"{name}_params_file")}
    return GroupAction([IncludeLaunchDescription(PythonLaunchDescriptionSource(str(SHARE / "launch" / f"{name}.launch.py")),
                                                 launch_arguments=arguments.items())], scoped=True)


def generate_launch_description() -> LaunchDescription:
    sim = IfCondition(LaunchConfiguration("sim"))
    sim_time = {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}
    x, y, height, yaw = ROBOT_STANCE
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value="false" if name == "use_sim_time" else "",
                                description=f"{text}; '' = the config file's" if name != "use_sim_time" else text)
          for name, text in SHARED.items()),
        *(DeclareLaunchArgument(f"{name}_params_file", default_value=str(SHARE / "config" / f"{name}.yaml"),
                                description=f"parameters of the {name} node") for name in ("query", "grasp")),
        DeclareLaunchArgument("sim", default_value="false", description="publish zero joint states and a fixed base pose"),
        DeclareLaunchArgument("sim_frame", default_value="map", description="sim: the frame base_link stands still in"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/m3.rviz"),
        Node(package="robot_state_publisher", executable="robot_state_publisher", output="screen",
             parameters=[{"robot_description": (SHARE / "urdf" / "b1_z1.urdf").read_text()}, sim_time]),
        Node(package="joint_state_publisher", executable="joint_state_publisher", condition=sim, parameters=[sim_time]),
        Node(package="tf2_ros", executable="static_transform_publisher", condition=sim, parameters=[sim_time],
             arguments=["--x", str(x), "--y", str(y), "--z", str(height), "--yaw", str(yaw),
                        "--frame-id", LaunchConfiguration("sim_frame"), "--child-frame-id", "base_link"]),
        Node(package="rviz2", executable="rviz2", condition=IfCondition(LaunchConfiguration("rviz")), parameters=[sim_time],
             arguments=["-d", str(SHARE / "config" / "m3.rviz")]),
        scoped_include("query"),
        scoped_include("grasp"),
    ])

"""The tabletop demo: robot_state_publisher with urdf/b1_z1.urdf, the query node and the grasp node.

    ros2 launch m3_memory tabletop_demo.launch.py memory:=scene.m3 [sim:=true]

On the robot, /joint_states (Z1 driver) and world -> base_link (lidar odometry) come from the
robot's own nodes. With sim:=true (no robot) zero joint states are published and base_link
stands still where m3's synthetic tabletop puts the B1 (m3_memory.synth.scene.ROBOT_STANCE).
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from m3_memory.synth.scene import ROBOT_STANCE

SHARE = Path(__file__).resolve().parents[1]  # share/m3_memory when installed, the repository in a checkout
SHARED = {"memory": "the *.m3 memory", "model": "foundation model the memory was built with",
          "world_frame": "tf frame of the memory's coordinates"}


def generate_launch_description() -> LaunchDescription:
    sim = IfCondition(LaunchConfiguration("sim"))
    x, y, height, yaw = ROBOT_STANCE
    include = {name: IncludeLaunchDescription(PythonLaunchDescriptionSource(str(SHARE / "launch" / f"{name}.launch.py")),
                                              launch_arguments={k: LaunchConfiguration(k) for k in SHARED}.items())
               for name in ("query", "grasp")}
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value="", description=f"{text}; '' = the config file's")
          for name, text in SHARED.items()),
        DeclareLaunchArgument("sim", default_value="false", description="publish zero joint states and a fixed base pose"),
        Node(package="robot_state_publisher", executable="robot_state_publisher", output="screen",
             parameters=[{"robot_description": (SHARE / "urdf" / "b1_z1.urdf").read_text()}]),
        Node(package="joint_state_publisher", executable="joint_state_publisher", condition=sim),
        Node(package="tf2_ros", executable="static_transform_publisher", condition=sim,
             arguments=["--x", str(x), "--y", str(y), "--z", str(height), "--yaw", str(yaw),
                        "--frame-id", "world", "--child-frame-id", "base_link"]),
        include["query"],
        include["grasp"],
    ])

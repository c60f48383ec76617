"""The written synthetic recordings carry the B1's stance at the table."""

import numpy as np

from m3_memory.recording import open_recording
from m3_memory.robot_pose import T_from_xyz_yaw
from m3_memory.synth import ROBOT_STANCE, TABLE_TOP_Z, tabletop_objects


def test_stance_is_at_the_table_edge_within_reach_of_the_duck():
    x, y, z, yaw = ROBOT_STANCE
    arm = T_from_xyz_yaw(*ROBOT_STANCE) @ [0.3455, 0.0, 0.085, 1.0]  # Z1 base on the trunk (config/robot.yaml)
    duck = next(o for o in tabletop_objects()[0] if o.name == "yellow bath duck")
    assert 0.0 < arm[1] - 0.40 < 0.1 and 0.4 < np.linalg.norm(arm[:2] - duck.center[:2]) < 0.5  # table edge y = 0.40
    assert z < TABLE_TOP_Z and yaw == -np.pi / 2


def test_folder_and_ros2_bag_carry_the_stance(synth):
    for path in (synth.folder, synth.rosbag2):
        rec = open_recording(path)
        pose = rec.robot_pose(list(rec)[-1].stamp)
        np.testing.assert_allclose(pose.T_world_base, T_from_xyz_yaw(*ROBOT_STANCE), atol=1e-12)
        assert pose.frame == "base_link"
    assert open_recording(synth.realsense).robot_pose(0.0) is None  # a librealsense .db3 cannot say

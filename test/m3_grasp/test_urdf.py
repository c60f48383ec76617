"""The URDF: frames named in the contract, mount offsets as documented in config/robot.yaml."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import yaml

from m3_grasp.kinematics import REQUIRED_FRAMES
from m3_grasp.robot import default_robot_yaml, default_urdf


def test_every_contract_frame_is_a_link():
    links = {link.get("name") for link in ET.parse(default_urdf()).getroot().iter("link")}
    assert set(REQUIRED_FRAMES) <= links


def test_config_documents_the_urdf_mounts():
    joints = {j.get("name"): j for j in ET.parse(default_urdf()).getroot().iter("joint")}
    mounts = yaml.safe_load(default_robot_yaml().read_text())["robot"]["mounts"]
    assert len(mounts) == 5
    for name, mount in mounts.items():
        joint = joints[name]
        assert (joint.find("parent").get("link"), joint.find("child").get("link")) == (mount["parent"], mount["child"])
        origin = joint.find("origin")
        np.testing.assert_allclose([float(v) for v in origin.get("xyz").split()], mount["xyz"], atol=1e-9)
        np.testing.assert_allclose([float(v) for v in origin.get("rpy").split()], mount["rpy"], atol=1e-9)


def test_optical_frame_follows_rep103(kin):
    R = kin.frame(np.zeros(6), "camera_link")[:3, :3].T @ kin.frame(np.zeros(6), "camera_color_optical_frame")[:3, :3]
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-9)  # optical z = body forward
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-9)  # optical x = body right
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-9)  # optical y = body down

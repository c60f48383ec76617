"""The pose chain c0_T_ct on a small test URDF with the project's frame names, and on the project's URDF."""

from pathlib import Path

import numpy as np
import pytest
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat

from m3_memory.conventions import invert_T, make_T
from m3_memory.errors import InputError
from m3_memory.memory.artifact import load_memory
from m3_memory.query.api import query_text
from m3_memory.query.camera import Camera
from m3_memory.query.posechain import RobotChain, RobotState, apply_alignment, first_camera_alignment, fit_alignment

URDF = Path(__file__).parent / "data" / "chain.urdf"
PROJECT_URDF = Path(__file__).resolve().parents[3] / "urdf" / "b1_z1.urdf"


def origin(xyz, rpy=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A URDF <origin>: rpy are fixed-axis X, Y, Z rotations."""
    return make_T(euler2mat(*rpy, "sxyz"), xyz)


def rot(axis, angle) -> np.ndarray:
    return make_T(axangle2mat(axis, angle), np.zeros(3))


def random_pose(rng) -> np.ndarray:
    return make_T(euler2mat(*rng.uniform(-np.pi, np.pi, 3)), rng.uniform(-2, 2, 3))


@pytest.fixture(scope="module")
def chain():
    return RobotChain.from_urdf(URDF)


def test_links_are_the_urdf_composed_by_hand(chain):
    q = np.array([0.3, -0.7, 1.1, 0.2, -0.4, 0.9])
    l_T_b, b_T_e, e_T_c = chain.links(q)
    np.testing.assert_allclose(l_T_b, invert_T(origin([-0.2, 0.03, 0.12], [0.02, -0.03, 0.4])) @ origin([0.3, 0, 0.08], [0, 0, 0.1]),
                               atol=1e-12)
    axes = [(0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0)]
    offsets = [(0, 0, 0.06), (0, 0, 0.045), (-0.35, 0, 0), (0.22, 0, 0.057), (0.07, 0, 0), (0.05, 0, 0)]
    b_T_6 = np.eye(4)
    for xyz, axis, angle in zip(offsets, axes, q):
        b_T_6 = b_T_6 @ origin(xyz) @ rot(axis, angle)
    six_T_e = origin([0.05, 0, 0]) @ origin([0.15, 0, 0])
    np.testing.assert_allclose(b_T_e, b_T_6 @ six_T_e, atol=1e-12)
    six_T_c = origin([0.07, 0, -0.06], [0, 0.1, 0]) @ origin([0, 0.015, 0], [-np.pi / 2, 0, -np.pi / 2])
    np.testing.assert_allclose(e_T_c, invert_T(six_T_e) @ six_T_c, atol=1e-12)
    # the optical frame looks along the tool axis (z_cam = x_link6 tilted by 0.1 rad)
    np.testing.assert_allclose(six_T_c[:3, 2], [np.cos(0.1), 0, -np.sin(0.1)], atol=1e-12)


def test_gripper_and_named_joints(chain):
    q = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6]
    named = {f"z1_joint{i + 1}": v for i, v in enumerate(q)}
    T = chain.camera_in_world(q, np.eye(4))
    np.testing.assert_allclose(chain.camera_in_world({**named, "z1_gripper_joint": -1.0}, np.eye(4)), T, atol=1e-12)


def test_compose_and_invert_round_trips(chain):
    rng = np.random.default_rng(1)
    states = [RobotState(rng.uniform(-1, 1, 6), random_pose(rng)) for _ in range(3)]
    A, B, C = states
    np.testing.assert_allclose(chain.c0_T_ct(A, A), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(chain.c0_T_ct(A, B) @ chain.c0_T_ct(B, A), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(chain.c0_T_ct(A, B) @ chain.c0_T_ct(B, C), chain.c0_T_ct(A, C), atol=1e-12)
    np.testing.assert_allclose(invert_T(chain.c0_T_ct(A, B)), chain.c0_T_ct(B, A), atol=1e-12)
    # the long chain equals the two cameras in the odometry world
    np.testing.assert_allclose(chain.c0_T_ct(A, B), invert_T(chain.camera_in_world(A.joints, A.T_world_lidar))
                               @ chain.camera_in_world(B.joints, B.T_world_lidar), atol=1e-12)


def test_point_seen_at_A_lands_at_the_same_place_from_B(chain):
    rng = np.random.default_rng(2)
    memory_T_world = random_pose(rng)  # the memory's frame is not the odometry's
    A = RobotState([0.2, 0.9, -1.2, 0.3, 0.1, 0.0], random_pose(rng))
    B = RobotState([-0.5, 0.6, -0.8, -0.2, 0.4, 0.7], A.T_world_lidar @ make_T(euler2mat(0, 0, 0.6), [0.4, -0.3, 0]))
    memory_T_c0 = memory_T_world @ chain.camera_in_world(A.joints, A.T_world_lidar)  # the scan started at A
    K = np.array([[400.0, 0, 160], [0, 400, 120], [0, 0, 1]])
    for state in (A, B):
        T_mem_cam = chain.camera_in_memory(A, state, memory_T_c0)
        np.testing.assert_allclose(T_mem_cam, memory_T_world @ chain.camera_in_world(state.joints, state.T_world_lidar),
                                   atol=1e-12)
        p = T_mem_cam @ np.array([0.05, -0.02, 0.8, 1.0])  # a point 0.8 m in front of this camera, memory frame
        # the camera sees it at a pixel and a depth; lifting it back with the chain's pose gives the same point
        pc = invert_T(T_mem_cam) @ p
        u, v, z = K[0, 0] * pc[0] / pc[2] + K[0, 2], K[1, 1] * pc[1] / pc[2] + K[1, 2], pc[2]
        lifted = T_mem_cam @ np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z, 1.0])
        np.testing.assert_allclose(lifted, p, atol=1e-12)
    # a point seen from A, looked up from B through the chain: the same memory position
    p_memory = chain.camera_in_memory(A, A, memory_T_c0) @ np.array([0.1, 0.0, 0.7, 1.0])
    p_B = invert_T(chain.camera_in_memory(A, B, memory_T_c0)) @ p_memory
    np.testing.assert_allclose(chain.camera_in_memory(A, B, memory_T_c0) @ p_B, p_memory, atol=1e-12)
    np.testing.assert_allclose(invert_T(memory_T_world @ chain.camera_in_world(B.joints, B.T_world_lidar)) @ p_memory, p_B,
                               atol=1e-12)


def test_fit_alignment_recovers_rigid_and_similarity():
    rng = np.random.default_rng(3)
    c0_T_cams = [random_pose(rng) for _ in range(6)]
    truth = random_pose(rng)
    fitted = fit_alignment([truth @ T for T in c0_T_cams], c0_T_cams)
    np.testing.assert_allclose(fitted, truth, atol=1e-9)
    sim = truth.copy()
    sim[:3, :3] *= 2.5  # a COLMAP memory 2.5x the metric scale
    memory_cams = [apply_alignment(sim, T) for T in c0_T_cams]
    fitted = fit_alignment(memory_cams, c0_T_cams, with_scale=True)
    np.testing.assert_allclose(fitted, sim, atol=1e-9)
    for T, M in zip(c0_T_cams, memory_cams):
        np.testing.assert_allclose(M[:3, :3], truth[:3, :3] @ T[:3, :3], atol=1e-12)  # rotations are not scaled
    with pytest.raises(InputError, match="3 or more"):
        fit_alignment(c0_T_cams[:2], c0_T_cams[:2])


def test_bad_input(chain, tmp_path):
    with pytest.raises(InputError, match="6 arm joints"):
        chain.camera_in_world([0.0] * 5, np.eye(4))
    with pytest.raises(InputError, match="nan"):
        chain.camera_in_world([0, 0, float("nan"), 0, 0, 0], np.eye(4))
    with pytest.raises(InputError, match="no joint"):
        chain.camera_in_world({"elbow": 0.1}, np.eye(4))
    skew = np.eye(4)
    skew[0, 1] = 0.3
    with pytest.raises(InputError, match="non-rigid"):
        chain.camera_in_world([0.0] * 6, skew)
    with pytest.raises(InputError, match="not found"):
        RobotChain.from_urdf(tmp_path / "none.urdf")
    broken = tmp_path / "no_camera.urdf"
    broken.write_text(URDF.read_text().replace("camera_color_optical_frame", "camera_optical"))
    with pytest.raises(InputError, match="camera_color_optical_frame"):
        RobotChain.from_urdf(broken)
    garbage = tmp_path / "garbage.urdf"
    garbage.write_text("<robot")
    with pytest.raises(InputError, match="URDF"):
        RobotChain.from_urdf(garbage)


def test_project_urdf_is_the_default():
    if not PROJECT_URDF.is_file():
        pytest.skip("urdf/b1_z1.urdf not in this checkout")
    chain = RobotChain.from_urdf()
    assert chain.urdf.resolve() == PROJECT_URDF.resolve()
    l_T_b, b_T_e, e_T_c = chain.links([0.0] * 6)
    np.testing.assert_allclose(l_T_b[:3, 3], [0.3455 + 0.25, 0, 0.085 - 0.11], atol=1e-9)  # config/robot.yaml mounts
    assert e_T_c[:3, :3] @ np.array([0, 0, 1.0]) @ np.array([1.0, 0, 0]) > 0.99  # the camera looks along the tool axis


def test_robot_camera_from_the_chain_finds_the_duck(built_memory):
    """The scan starts with the robot's camera at source view 1; the robot drives and moves its arm
    so the camera is at view 6. The chain puts that camera where view 6 is, and the duck is found
    at the same place from both."""
    chain = RobotChain.from_urdf(URDF)
    memory = load_memory(built_memory[0])
    view_a, view_b = memory.cameras[1], memory.cameras[6]
    odom_T_memory = make_T(euler2mat(0.1, -0.2, 1.3), [3.0, -1.0, 0.2])  # odometry world vs memory frame
    qa, qb = np.array([0.3, 0.8, -1.0, 0.2, 0.1, -0.4]), np.array([-0.6, 1.1, -1.3, -0.3, 0.5, 0.8])

    def lidar_pose(q, T_memory_cam):  # where the lidar is when the camera is at T_memory_cam
        l_T_b, b_T_e, e_T_c = chain.links(q)
        return odom_T_memory @ T_memory_cam @ invert_T(l_T_b @ b_T_e @ e_T_c)

    start = RobotState(qa, lidar_pose(qa, view_a.T_world_cam))
    now = RobotState(qb, lidar_pose(qb, view_b.T_world_cam))
    memory_T_c0 = first_camera_alignment(memory) @ invert_T(memory.cameras[0].T_world_cam) @ view_a.T_world_cam
    T_memory_cam = chain.camera_in_memory(start, now, memory_T_c0)
    np.testing.assert_allclose(T_memory_cam, view_b.T_world_cam, atol=1e-9)
    targets = [query_text(memory, "yellow bath duck", Camera(v.K, v.width, v.height, T)).point_world
               for v, T in ((view_a, chain.camera_in_memory(start, start, memory_T_c0)), (view_b, T_memory_cam))]
    assert all(t is not None for t in targets)
    assert np.linalg.norm(targets[0] - targets[1]) < 0.02

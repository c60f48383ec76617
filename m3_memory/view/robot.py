"""Grasp preview in the viewer: the B1 + Z1 URDF at the memory's robot pose, and a planned grasp
animated on it (pre-grasp, grasp, lift). Planning only: nothing is ever sent to a robot.

The only viewer module that imports m3_grasp (the optional ``--robot`` part, at the end of the
data flow). The URDF carries collision primitives only, which is what is shown.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT
from m3_grasp.plan import GraspPlan, plan_grasp
from m3_grasp.robot import RobotConfig, default_urdf
from m3_grasp.run import base_pose_of, memory_scene_points
from m3_grasp.state import ArmState
from m3_memory.memory.artifact import Memory
from m3_memory.query.api import QueryResult
from m3_memory.view.scene import wxyz_of

STAGES = ("pre_grasp", "grasp", "lift")  # waypoints marked in the scene


class RobotPreview:
    """The robot in a viser scene at ``T_world_base`` (the memory's robot pose); raises
    :class:`m3_memory.errors.InputError` when the memory records none."""

    def __init__(self, server, memory: Memory):
        import yourdfpy
        from viser.extras import ViserUrdf

        self.memory, self.server = memory, server
        self.robot = RobotConfig.load()
        self.T_world_base, self.source = base_pose_of(memory, None, self.robot)
        server.scene.add_frame("/robot", wxyz=wxyz_of(self.T_world_base[:3, :3]), position=self.T_world_base[:3, 3],
                               show_axes=False)
        urdf = yourdfpy.URDF.load(str(default_urdf()), load_collision_meshes=True, build_collision_scene_graph=True)
        self.urdf = ViserUrdf(server, urdf, root_node_name="/robot", load_meshes=False, load_collision_meshes=True,
                              collision_mesh_color_override=(0.55, 0.6, 0.7, 0.8))
        self.names = self.urdf.get_actuated_joint_names()
        self.show(ArmState.rest().q, ArmState.rest().gripper)
        self.plan: GraspPlan | None = None
        self._stop = threading.Event()

    def show(self, q: np.ndarray, gripper: float) -> None:
        """Pose the arm: joints q [6] and gripper (rad)."""
        values = {**dict(zip(ARM_JOINTS, np.asarray(q, float))), GRIPPER_JOINT: float(gripper)}
        self.urdf.update_cfg(np.array([values.get(n, 0.0) for n in self.names]))

    def plan_for(self, result: QueryResult) -> GraspPlan:
        """Plan a grasp of the query's target from the arm's rest pose (assumed), avoiding the
        memory's Gaussians; marks the pre-grasp, grasp and lift poses in the scene."""
        plan = plan_grasp(result.point_world, result.points_world, memory_scene_points(self.memory), self.T_world_base,
                          ArmState.rest(), robot=self.robot)
        self.plan = plan
        for name in STAGES:
            T = plan.waypoints.get(name)
            if T is not None:
                self.server.scene.add_frame(f"/grasp/{name}", wxyz=wxyz_of(T[:3, :3]), position=T[:3, 3], axes_length=0.05,
                                            axes_radius=0.003)
        return plan

    def animate(self, plan: GraspPlan, speed: float = 1.0) -> threading.Thread:
        """Play the plan's samples on the URDF in real time (``speed`` x) in a background thread
        (returned); a new call stops the previous animation."""
        self._stop.set()
        stop = self._stop = threading.Event()

        def play() -> None:
            for q, g in zip(plan.q_trajectory, plan.gripper):
                if stop.is_set():
                    return
                self.show(q, g)
                time.sleep(plan.dt / speed)

        thread = threading.Thread(target=play, daemon=True)
        thread.start()
        return thread

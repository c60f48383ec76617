"""Pictures of a simulated grasp: the arm skeleton over the scene points (world frame)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402

from m3_grasp.kinematics import Z1Kinematics  # noqa: E402
from m3_grasp.safety import trunk_half_extents  # noqa: E402


def _world(T_world_base: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ T_world_base[:3, :3].T + T_world_base[:3, 3]


def _arm(kin: Z1Kinematics, T_world_base: np.ndarray, q: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Arm skeleton [F, 3] and the two jaw segments [2, 2, 3] in the world frame."""
    T = kin.fk(q)
    jaw = [[T[:3, 3] + s * width / 2 * T[:3, 2] - 0.08 * T[:3, 0], T[:3, 3] + s * width / 2 * T[:3, 2]] for s in (-1, 1)]
    return _world(T_world_base, kin.chain_points(q)), _world(T_world_base, np.array(jaw).reshape(-1, 3)).reshape(2, 2, 3)


def _axes(fig, scene: np.ndarray, obj: np.ndarray, centre: np.ndarray, kin: Z1Kinematics, T_world_base: np.ndarray):
    """3D axes (equal scale, 1.1 m cube around ``centre``) with the scene, object and B1 trunk."""
    ax = fig.add_subplot(projection="3d")
    ax.scatter(*scene.T, s=0.5, c="0.6", alpha=0.4)
    ax.scatter(*obj.T, s=2, c="gold")
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * trunk_half_extents(kin.urdf)
    corners = _world(T_world_base, corners)
    for i in range(8):
        for j in range(i + 1, 8):
            if bin(i ^ j).count("1") == 1:  # corners differing in one coordinate share an edge
                ax.plot(*corners[[i, j]].T, c="0.3", lw=1)
    half = 0.55
    ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] - half, centre[1] + half),
           zlim=(centre[2] - half, centre[2] + half), xlabel="x (m)", ylabel="y (m)", zlabel="z (m)")
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=20, azim=-60)
    return ax


def draw_sim(kin: Z1Kinematics, T_world_base: np.ndarray, q: np.ndarray, g: np.ndarray, scene_world: np.ndarray,
             object_world: np.ndarray, closed: int, out: Path, animate: bool = True, frames: int = 24) -> list[Path]:
    """sim.png (arm at start, pre-grasp, grasp and end over the scene) and, if ``animate``,
    sim.gif (``frames`` frames). q [T, 6], g [T] gripper angles (rad); closed: sample index
    at which the jaws have closed (the object rides with the tool after it)."""
    centre = (T_world_base @ kin.T_base_armbase)[:3, 3] * [1, 1, 0] + [0, 0, 0.6]
    rng = np.random.default_rng(0)
    near = scene_world[np.linalg.norm(scene_world - centre, axis=1) < 0.9]
    scene = near[rng.choice(len(near), min(len(near), 4000), replace=False)] if len(near) else near
    obj = object_world[rng.choice(len(object_world), min(len(object_world), 800), replace=False)]
    T_close_inv = np.linalg.inv(T_world_base @ kin.fk(q[closed]))
    obj_tool = obj @ T_close_inv[:3, :3].T + T_close_inv[:3, 3]  # the object in the tool frame at closing

    def object_at(t: int) -> np.ndarray:
        if t <= closed:
            return obj
        T = T_world_base @ kin.fk(q[t])
        return obj_tool @ T[:3, :3].T + T[:3, 3]

    tcp = _world(T_world_base, np.array([kin.fk(qt)[:3, 3] for qt in q[:: max(len(q) // 100, 1)]]))
    fig = plt.figure(figsize=(7, 6))
    ax = _axes(fig, scene, obj, centre, kin, T_world_base)
    ax.plot(*tcp.T, c="tab:green", lw=1, label="tool centre path")
    keys = sorted({0, int(np.argmin(g)), closed, len(q) - 1})
    for i, t in enumerate(keys):
        skeleton, jaws = _arm(kin, T_world_base, q[t], float(kin.gripper.width(g[t])))
        alpha = 0.35 + 0.65 * i / max(len(keys) - 1, 1)
        ax.plot(*skeleton.T, "-o", c="tab:blue", ms=3, alpha=alpha)
        for jaw in jaws:
            ax.plot(*jaw.T, c="tab:red", lw=2, alpha=alpha)
    ax.set_title("Z1 grasp (sim): start, pre-grasp, grasp, lift")
    ax.legend(loc="upper left")
    files = [out / "sim.png"]
    fig.savefig(files[0], dpi=110)
    plt.close(fig)
    if animate:
        fig = plt.figure(figsize=(5, 4.5))
        ax = _axes(fig, scene, obj[:0], centre, kin, T_world_base)
        arm_line, = ax.plot([], [], [], "-o", c="tab:blue", ms=3)
        jaw_lines = [ax.plot([], [], [], c="tab:red", lw=2)[0] for _ in range(2)]
        held = ax.scatter(*obj.T, s=2, c="gold")
        steps = np.linspace(0, len(q) - 1, frames).astype(int)

        def update(k):
            skeleton, jaws = _arm(kin, T_world_base, q[steps[k]], float(kin.gripper.width(g[steps[k]])))
            arm_line.set_data_3d(*skeleton.T)
            for line, jaw in zip(jaw_lines, jaws):
                line.set_data_3d(*jaw.T)
            held._offsets3d = tuple(object_at(steps[k]).T)
            return [arm_line, *jaw_lines, held]

        FuncAnimation(fig, update, frames=frames).save(out / "sim.gif", writer=PillowWriter(fps=8), dpi=60)
        plt.close(fig)
        files.append(out / "sim.gif")
    return files

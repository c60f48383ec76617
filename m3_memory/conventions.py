"""The data conventions of m3, written once.

- Units: metres, seconds, radians.
- Poses: ``T_a_b`` is a 4x4 float64 matrix mapping points in frame b to frame a,
  ``p_a = T_a_b @ p_b``. Camera poses are ``T_world_cam`` with the camera in the
  OpenCV optical convention (x right, y down, z forward). Renderers take
  ``viewmat = inv(T_world_cam)``.
- Quaternions: ``wxyz`` inside the library (transforms3d's order); ``xyzw`` only at
  the ROS message edge (:func:`quat_wxyz_to_xyzw`, :func:`quat_xyzw_to_wxyz`).
- Depth in memory: float32 metres, 0 = invalid. On disk: uint16 millimetre PNG
  unless a format says otherwise.
- Images: HxWx3 uint8 RGB at the edges.
"""

from __future__ import annotations

import numpy as np
import transforms3d.quaternions as tq

from m3_memory.errors import InputError

DEPTH_PNG_SCALE = 1000.0  # uint16 PNG units per metre (millimetres)
WORLD_FRAME = "world"  # the fixed frame a recording's poses are given in, unless it names another
OPTICAL_FRAME = "camera_color_optical_frame"  # realsense-ros: the colour camera, OpenCV axes

# OpenGL / nerfstudio / Blender camera (x right, y up, z backward) to OpenCV optical
# (x right, y down, z forward): T_cam_cv = T_cam_gl @ GL_FROM_CV.
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 pose from rotation ``R`` [3, 3] and translation ``t`` [3] (metres)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 pose [4, 4] (uses R^T, exact for rigid poses)."""
    R = T[:3, :3]
    return make_T(R.T, -R.T @ T[:3, 3])


def T_from_quat_wxyz(q_wxyz, t) -> np.ndarray:
    """4x4 pose from a wxyz quaternion [4] and translation [3] (metres)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return make_T(tq.quat2mat(q / np.linalg.norm(q)), t)


def quat_wxyz_from_T(T: np.ndarray) -> np.ndarray:
    """Unit wxyz quaternion [4] of a pose's rotation, with w >= 0."""
    q = tq.mat2quat(T[:3, :3])
    return q if q[0] >= 0 else -q


def quat_xyzw_to_wxyz(q_xyzw) -> np.ndarray:
    """ROS message order (x, y, z, w) -> library order (w, x, y, z)."""
    x, y, z, w = q_xyzw
    return np.array([w, x, y, z], dtype=np.float64)


def quat_wxyz_to_xyzw(q_wxyz) -> np.ndarray:
    """Library order (w, x, y, z) -> ROS message order (x, y, z, w)."""
    w, x, y, z = q_wxyz
    return np.array([x, y, z, w], dtype=np.float64)


def rotation_deg(R: np.ndarray) -> float:
    """Rotation angle of R [3, 3] in degrees (atan2 form: accurate near 0 and 180)."""
    sin = 0.5 * np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return float(np.degrees(np.arctan2(sin, (np.trace(R) - 1.0) / 2.0)))


def motion_size(T: np.ndarray) -> tuple[float, float]:
    """(translation metres, rotation degrees) of a rigid motion T [4, 4]."""
    return float(np.linalg.norm(T[:3, 3])), rotation_deg(T[:3, :3])


def rigid_error(T: np.ndarray) -> str | None:
    """Why ``T`` [4, 4] is not a finite rigid transform, or None when it is."""
    T = np.asarray(T)
    if T.shape != (4, 4):
        return f"pose has shape {T.shape}, expected (4, 4)"
    if not np.all(np.isfinite(T)):
        return "pose contains NaN or infinity"
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        return f"pose last row is {T[3].tolist()}, expected [0, 0, 0, 1]"
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0.999:
        return "pose rotation is not orthonormal with determinant +1 (non-rigid pose)"
    return None


def fit_transform(src: np.ndarray, dst: np.ndarray, with_scale: bool = False, unique: bool = False,
                  what: str = "alignment") -> np.ndarray:
    """The rigid motion T [4, 4] that best maps points ``src`` [n, 3] onto ``dst`` [n, 3] (metres),
    least squares over ``|dst_i - T src_i|`` (Umeyama 1991); ``with_scale`` also fits a scale s,
    returned as a similarity ``[[s R, t], [0, 1]]``. Points on one line leave the rotation about
    it free: one of the equally good rotations is returned, or with ``unique`` a one-line
    InputError naming ``what``, as for fewer than 3 point pairs. (scipy's
    ``Rotation.align_vectors`` fits the rotation alone; here one SVD gives the rotation, the scale
    and whether the rotation is determined.)"""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise InputError(what, f"needs the same 3 or more points in both frames, got {len(src)} and {len(dst)}")
    ms, md = src.mean(0), dst.mean(0)
    U, D, Vt = np.linalg.svd((dst - md).T @ (src - ms) / len(src))  # of the cross-covariance [3, 3]
    if unique and D[1] < 1e-12 * max(D[0], 1e-300):
        raise InputError(what, "the points lie on one line: the rotation about it is undetermined")
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])  # a rotation, never a reflection
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / ((src - ms) ** 2).sum(1).mean()) if with_scale else 1.0
    return make_T(s * R, md - s * R @ ms)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """OpenCV K [3, 3] of an image resized by sx, sy (new width / old width, ...): the image
    edges stay put, so pixel centres (at integers) move as (c + 0.5) s - 0.5."""
    out = np.array(K, dtype=np.float64)
    out[0, 0], out[0, 2] = out[0, 0] * sx, (out[0, 2] + 0.5) * sx - 0.5
    out[1, 1], out[1, 2] = out[1, 1] * sy, (out[1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole intrinsics K [3, 3] in pixels (pixel centres at integer + 0.5 are not assumed)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def depth_from_u16(depth_u16: np.ndarray, scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """uint16 depth [H, W] in units of 1/scale metres -> float32 metres, 0 stays invalid."""
    return (depth_u16.astype(np.float32) / np.float32(scale)).astype(np.float32)


def depth_to_u16(depth_m: np.ndarray, scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """float32 metres [H, W] -> uint16 in units of 1/scale metres (rounded; out of range -> 0)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    u = np.rint(d * scale)
    u[(u < 0) | (u > 65535)] = 0
    return u.astype(np.uint16)


def backproject(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None = None,
                stride: int = 1) -> np.ndarray:
    """Valid depth pixels [H, W] (metres) -> 3D points [M, 3] in the world (or camera) frame.

    Pixel (u, v) is the pixel centre at integer coordinates (OpenCV convention).
    """
    d = depth[::stride, ::stride]
    v, u = np.nonzero(d > 0)
    z = d[v, u].astype(np.float64)
    u = u * stride
    v = v * stride
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    p = np.stack([x, y, z], axis=1)
    if T_world_cam is not None:
        p = p @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    return p

"""Posed-folder readers: real 3DMatch and APC 2016 captures (skipped when absent), folders of
all four formats written here from known frames, and bad input."""

import json
import re
import shutil

import numpy as np
import pytest
from scipy.spatial import cKDTree
from transforms3d.euler import euler2mat

from m3_memory.conventions import backproject, depth_to_u16, invert_T, make_T, quat_wxyz_from_T
from m3_memory.errors import InputError
from m3_memory.recording import detect_format, open_recording
from m3_memory.recording.apc2016 import Apc2016Recording, decode_apc_depth
from m3_memory.recording.colmap import ColmapRecording
from m3_memory.recording.images import write_png
from m3_memory.recording.nerfstudio import NerfstudioRecording
from m3_memory.recording.threedmatch import ThreeDMatchRecording

APC = "apc2016_realsense_shelf/data/sample/scene-0000"
MATCH = "nvblox_3dmatch_sun3d/nvblox/tests/data/3dmatch"
READERS = (ThreeDMatchRecording, Apc2016Recording, NerfstudioRecording, ColmapRecording)


def alignment_median(a, b, T_a=None, T_b=None, stride=4):
    """Median distance (m) from frame b's points to their nearest of frame a's, both moved to
    the world with the given poses (default: the frames' own)."""
    pa = backproject(a.depth, a.K, a.T_world_cam if T_a is None else T_a, stride)  # [N, 3]
    pb = backproject(b.depth, b.K, b.T_world_cam if T_b is None else T_b, stride)  # [M, 3]
    return float(np.median(cKDTree(pa).query(pb)[0]))


def check_poses_line_up(a, b):
    """The poses bring b's points onto a's far better than no poses or inverted poses do."""
    posed = alignment_median(a, b)
    assert posed < 0.6 * alignment_median(a, b, np.eye(4), np.eye(4))
    assert posed < 0.2 * alignment_median(a, b, invert_T(a.T_world_cam), invert_T(b.T_world_cam))


# ---------------------------------------------------------------- real captures


def test_3dmatch_real(realdata):
    rec = open_recording(realdata / MATCH)
    assert rec.format_name == "3dmatch" and len(rec) == 5
    frames = list(rec)
    assert [f.name for f in frames] == [f"seq-01/frame-{n:06d}" for n in (0, 1, 2, 116, 422)]
    np.testing.assert_allclose([f.stamp for f in frames], np.array([0, 1, 2, 116, 422]) / 30.0)
    f = frames[0]
    assert f.size == (480, 640)
    np.testing.assert_allclose(f.K, [[570.342205, 0, 320], [0, 570.342205, 240], [0, 0, 1]])
    valid = f.depth[f.depth > 0]
    assert 0.5 < np.median(valid) < 5.0 and valid.max() < 8.0  # millimetre PNG read as metres
    assert alignment_median(frames[0], frames[1]) < 0.05  # measured 1.7 cm
    check_poses_line_up(frames[3], frames[4])  # 1.1 m, 15 deg apart: 6.6 cm posed, 25 cm without poses
    # a seq-* folder on its own reads the same frames
    again = list(open_recording(realdata / MATCH / "seq-01"))
    assert len(again) == 5 and np.array_equal(again[4].T_world_cam, frames[4].T_world_cam)


def test_apc2016_real(realdata):
    rec = open_recording(realdata / APC)
    assert rec.format_name == "apc2016" and len(rec) == 15
    assert rec.objects == ["creativity_chenille_stems", "i_am_a_bunny_book", "kleenex_tissue_box",
                           "laugh_out_loud_joke_book"]
    assert rec.T_world_bin[0, 3] == pytest.approx(1.4732899) and rec.K_depth[0, 0] == pytest.approx(477.584259)
    frames = list(rec)
    f = frames[0]
    assert f.K[0, 0] == pytest.approx(615.195190) and f.K[0, 2] == pytest.approx(298.442688)
    valid = f.depth > 0
    assert 0.2 < valid.mean() < 0.35  # sparse F200 depth registered to colour: 26% valid
    assert 0.3 < np.median(f.depth[valid]) < 1.5  # 0.55 m: the shelf bin
    assert set(f.masks) == set(rec.objects)
    box = f.masks["kleenex_tissue_box"]  # confidence > threshold: one compact blob on the box
    ys, xs = np.nonzero(box)
    assert 3000 < box.sum() < 0.1 * box.size
    assert box.sum() > 0.5 * (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # fills over half its bounding box
    assert alignment_median(frames[0], frames[1]) < 0.05  # measured 0.65 cm
    check_poses_line_up(frames[0], frames[14])  # 0.32 m, 54 deg apart: 3.4 cm posed, 7.4 cm without


# ---------------------------------------------------------------- folders written here


def make_frames(n=3, h=24, w=32, seed=0):
    """n known frames: K [3, 3], T_world_cam poses, uint8 colour, depth in whole millimetres."""
    rng = np.random.default_rng(seed)
    K = np.array([[40.0, 0, 15.5], [0, 41.0, 11.5], [0, 0, 1]])
    poses = [make_T(euler2mat(*rng.uniform(-np.pi, np.pi, 3)), rng.normal(size=3)) for _ in range(n)]
    rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    depth = [np.round(rng.uniform(0.3, 3, (h, w)), 3).astype(np.float32) for _ in range(n)]
    for d in depth:
        d[0, :3] = 0.0  # some invalid pixels
    return K, poses, rgb, depth


def matrix_text(M):
    return "\n".join("\t".join(f"{x:.17g}" for x in row) for row in M) + "\n"


def write_3dmatch(root, K, poses, rgb, depth, numbers, seqs=("seq-01",)):
    """Every sequence gets all frames, with the given frame numbers."""
    root.mkdir(parents=True)
    (root / "camera-intrinsics.txt").write_text(matrix_text(K))
    for seq in seqs:
        (root / seq).mkdir()
        for n, T, c, d in zip(numbers, poses, rgb, depth):
            write_png(root / seq / f"frame-{n:06d}.color.png", c)
            write_png(root / seq / f"frame-{n:06d}.depth.png", depth_to_u16(d))
            (root / seq / f"frame-{n:06d}.pose.txt").write_text(matrix_text(T))


def test_3dmatch(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_3dmatch(tmp_path / "3dm", K, poses, rgb, depth, [0, 5, 9], seqs=("seq-01", "seq-02"))
    (tmp_path / "3dm" / "seq-01" / "notes.txt").write_text("not a frame")
    assert detect_format(tmp_path / "3dm") == "3dmatch"
    frames = list(open_recording(tmp_path / "3dm"))
    assert [f.name for f in frames] == [f"seq-0{s}/frame-00000{n}" for s in (1, 2) for n in (0, 5, 9)]
    # no timestamps in the format: frame number / 30 s, the second sequence after the first
    np.testing.assert_allclose([f.stamp for f in frames], np.array([0, 5, 9, 10, 15, 19]) / 30.0)
    for f, T, c, d in zip(frames, poses * 2, rgb * 2, depth * 2):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-15)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_allclose(f.depth, d, atol=1e-6)
    one_seq = open_recording(tmp_path / "3dm" / "seq-02")
    assert one_seq.format_name == "3dmatch" and [f.name for f in one_seq][0] == "seq-02/frame-000000"


APC_OBJECTS = ["duck", "box"]


def write_apc(root, K, poses, rgb, depth, masks=None, thresholds=(0.3, 0.6)):
    """An APC 2016 scene: depth in 0.1 mm units with its bits rotated left by 3; masks[i][obj]
    a float confidence [H, W] in [0, 1]."""
    (root / "masks").mkdir(parents=True)
    T_world_bin = make_T(np.eye(3), [1.5, 0.0, 1.0])
    text = ["# Environment: shelf", "# Bin ID: B", f"# Objects: {json.dumps(APC_OBJECTS)}", "",
            "# Color camera intrinsic matrix", matrix_text(K), "# Depth camera intrinsic matrix", matrix_text(K),
            "# Depth-to-color camera extrinsic matrix", matrix_text(np.eye(4)),
            "# Bin-to-world transformation matrix", matrix_text(T_world_bin)]
    for i, (T, c, d) in enumerate(zip(poses, rgb, depth)):
        text += [f"# Camera-to-world extrinsic matrix (camera pose) for frame-{i:06d}", matrix_text(T)]
        write_png(root / f"frame-{i:06d}.color.png", c)
        units = np.rint(d.astype(np.float64) * 10000).astype(np.uint32)
        write_png(root / f"frame-{i:06d}.depth.png", (((units >> 13) | (units << 3)) & 0xFFFF).astype(np.uint16))
        for obj, conf in (masks[i] if masks else {}).items():
            write_png(root / "masks" / f"frame-{i:06d}.{obj}.mask.png", np.rint(conf * 65535).astype(np.uint16))
    for obj, t in zip(APC_OBJECTS, thresholds):
        (root / "masks" / f"{obj}.thresh.txt").write_text(f"{t:.5f}\n")
    (root / "cam.info.txt").write_text("\n".join(text))


def test_apc2016(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    rng = np.random.default_rng(1)
    conf = [{obj: rng.uniform(0, 1, depth[0].shape) for obj in APC_OBJECTS} for _ in range(2)]
    del conf[1]["box"]  # a frame without a mask file for an object has no mask for it
    write_apc(tmp_path / "apc", K, poses, rgb, depth, conf)
    assert detect_format(tmp_path / "apc") == "apc2016"
    rec = open_recording(tmp_path / "apc")
    assert rec.objects == APC_OBJECTS and len(rec) == 2
    np.testing.assert_allclose(rec.T_world_bin[:3, 3], [1.5, 0, 1])
    frames = list(rec)
    for i, (f, T, c, d) in enumerate(zip(frames, poses, rgb, depth)):
        assert f.name == f"frame-{i:06d}" and f.stamp == pytest.approx(i / 30)
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-15)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_allclose(f.depth, d, atol=1e-4)
        for obj, t in zip(APC_OBJECTS, (0.3, 0.6)):
            if obj in conf[i]:
                np.testing.assert_array_equal(f.masks[obj], np.rint(conf[i][obj] * 65535) / 65535 > t)
    assert set(frames[1].masks) == {"duck"}


def test_apc_depth_bit_rotation():
    metres = np.array([0.0, 0.5, 1.2345, 3.0, 6.5535])
    stored_units = np.rint(metres * 10000).astype(np.uint32)
    raw = (((stored_units >> 13) | (stored_units << 3)) & 0xFFFF).astype(np.uint16)  # rotate left by 3
    decoded = decode_apc_depth(raw)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, metres, atol=1e-4)


def write_nerfstudio(root, K, poses, rgb, depth, npy_depth=False):
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    frames = []
    for i, (T, c, d) in enumerate(zip(poses, rgb, depth)):
        write_png(root / "images" / f"{i}.png", c)
        if npy_depth:
            np.save(root / "depth" / f"{i}.npy", d)
        else:
            write_png(root / "depth" / f"{i}.png", depth_to_u16(d))
        frames.append({"file_path": f"images/{i}.png", "depth_file_path": f"depth/{i}.{'npy' if npy_depth else 'png'}",
                       "transform_matrix": (T @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()})  # OpenCV -> OpenGL camera
    meta = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
            "w": rgb[0].shape[1], "h": rgb[0].shape[0], "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return meta


def rewrite_json(root, edit):
    meta = json.loads((root / "transforms.json").read_text())
    edit(meta)
    (root / "transforms.json").write_text(json.dumps(meta))


def test_nerfstudio(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    assert detect_format(tmp_path / "ns" / "transforms.json") == "nerfstudio"
    frames = list(open_recording(tmp_path / "ns"))
    assert len(frames) == 3 and [f.stamp for f in frames] == [0, 1 / 30, 2 / 30]
    for f, T, c, d in zip(frames, poses, rgb, depth):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-12)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_allclose(f.depth, d, atol=1e-6)


def test_nerfstudio_m3_extensions_and_options(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    root = tmp_path / "ns"
    write_nerfstudio(root, K, poses, rgb, depth, npy_depth=True)
    (root / "labels").mkdir()
    label = np.zeros(depth[0].shape, np.uint8)
    label[2:5, 3:9] = 1
    label[10:, 20:] = 7
    write_png(root / "labels" / "0.png", label)

    def edit(meta):
        meta["m3_objects"] = [{"id": 1, "name": "yellow bath duck"}, {"id": 7, "name": "mug"}]
        meta["camera_model"] = "OPENCV"
        meta.update(k1=0.0, k2=0.0, p1=0.0, p2=0.0)
        meta["frames"][0].update(m3_label_path="labels/0.png", m3_stamp=12.5)
        meta["frames"][1].update(m3_stamp=12.75, fl_x=55.0, cx=10.0)  # per-frame intrinsics win

    rewrite_json(root, edit)
    rec = open_recording(root / "transforms.json")
    assert rec.objects == ["yellow bath duck", "mug"]
    f0, f1 = list(rec)
    assert (f0.stamp, f1.stamp) == (12.5, 12.75)
    np.testing.assert_array_equal(f0.masks["yellow bath duck"], label == 1)
    np.testing.assert_array_equal(f0.masks["mug"], label == 7)
    assert f1.masks == {}
    np.testing.assert_array_equal(f0.depth, depth[0])  # .npy: float metres as stored
    assert (f1.K[0, 0], f1.K[0, 2], f1.K[1, 1]) == (55.0, 9.5, K[1, 1])


def test_nerfstudio_m3_robot_pose(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    root = tmp_path / "ns"
    write_nerfstudio(root, K, poses, rgb, depth)
    assert open_recording(root).robot_pose(1.0) is None
    T = make_T(euler2mat(0, 0, 0.3), [1.0, -0.5, 0.55])
    rewrite_json(root, lambda meta: meta.update(m3_robot_pose={"T_world_base": T.tolist(), "source": "a survey"}))
    pose = open_recording(root).robot_pose(1.0)
    np.testing.assert_array_equal(pose.T_world_base, T)
    assert pose.frame == "base_link" and pose.source == f"m3_robot_pose in {root / 'transforms.json'} (a survey)"
    for bad, words in (([1, 2], "must be"), ({"T_world_base": np.diag([1.0, 2, 1, 1]).tolist()}, "non-rigid")):
        rewrite_json(root, lambda meta: meta.update(m3_robot_pose=bad))
        with raises_naming(root / "transforms.json", words):
            open_recording(root)


def test_nerfstudio_depth_unit_scale_factor(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)  # millimetre PNG ...
    rewrite_json(tmp_path / "ns", lambda meta: meta.update(depth_unit_scale_factor=1e-4))  # ... declared as 0.1 mm
    np.testing.assert_allclose(next(iter(open_recording(tmp_path / "ns"))).depth, depth[0] / 10, atol=1e-6)


def test_nerfstudio_synthetic_masks(synth):
    rec = open_recording(synth.folder)
    assert "yellow bath duck" in rec.objects
    f = next(iter(rec))
    assert f.masks["yellow bath duck"].any()


def write_colmap(root, K, poses, rgb, depth, model="PINHOLE", ids=None, npy_depth=True):
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "depth").mkdir()
    params = {"PINHOLE": f"{K[0, 0]} {K[1, 1]} {K[0, 2] + 0.5} {K[1, 2] + 0.5}",
              "SIMPLE_PINHOLE": f"{K[0, 0]} {K[0, 2] + 0.5} {K[1, 2] + 0.5}",
              "SIMPLE_RADIAL": f"{K[0, 0]} {K[0, 2] + 0.5} {K[1, 2] + 0.5} 0.01"}[model]
    (root / "sparse" / "0" / "cameras.txt").write_text(
        f"# Camera list with one line of data per camera:\n1 {model} {rgb[0].shape[1]} {rgb[0].shape[0]} {params}\n")
    lines = ["# Image list with two lines of data per image:", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (T, c, d) in enumerate(zip(poses, rgb, depth)):
        T_cw = invert_T(T)
        q = quat_wxyz_from_T(T_cw)
        image_id = ids[i] if ids else i + 1
        lines += [f"{image_id} {' '.join(repr(float(x)) for x in q)} {' '.join(repr(float(x)) for x in T_cw[:3, 3])} "
                  f"1 img{i}.png", "" if i % 2 else "10.5 20.5 -1 3.0 4.0 17"]
        write_png(root / "images" / f"img{i}.png", c)
        if npy_depth:
            np.save(root / "depth" / f"img{i}.npy", d)
        else:
            write_png(root / "depth" / f"img{i}.png", depth_to_u16(d))
    (root / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")


def test_colmap(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    assert detect_format(tmp_path / "cm") == "colmap"
    frames = list(open_recording(tmp_path / "cm"))
    assert len(frames) == 3 and [f.name for f in frames] == ["img0", "img1", "img2"]
    for f, T, c, d in zip(frames, poses, rgb, depth):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-9)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_array_equal(f.depth, d)


def test_colmap_sparse_points(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    assert open_recording(tmp_path / "cm").sparse_points() is None  # no points3D.txt
    (tmp_path / "cm" / "sparse" / "0" / "points3D.txt").write_text(
        "# 3D point list\n1 0.5 -0.25 2.0 255 128 0 0.7 1 0 2 3\n2 1 2 3 10 20 30 0.1\n")
    xyz, colors = open_recording(tmp_path / "cm").sparse_points()
    np.testing.assert_allclose(xyz, [[0.5, -0.25, 2.0], [1, 2, 3]])
    np.testing.assert_array_equal(colors, [[255, 128, 0], [10, 20, 30]])
    (tmp_path / "cm" / "sparse" / "0" / "points3D.txt").write_text("1 0.5 nan 2.0 255 128 0 0.7\n")
    with pytest.raises(InputError, match="points3D.txt line 1"):
        open_recording(tmp_path / "cm").sparse_points()


def test_colmap_model_folder_given_png_depth_and_image_id_order(tmp_path):
    K, poses, rgb, depth = make_frames()
    K[1, 1] = K[0, 0]
    write_colmap(tmp_path / "cm", K, poses, rgb, depth, model="SIMPLE_PINHOLE", ids=[30, 10, 20], npy_depth=False)
    rec = open_recording(tmp_path / "cm" / "sparse" / "0")  # images/ and depth/ are two folders up
    frames = list(rec)
    assert [f.name for f in frames] == ["img1", "img2", "img0"]
    np.testing.assert_allclose([f.stamp for f in frames], [0, 1 / 30, 2 / 30])
    for f, i in zip(frames, (1, 2, 0)):
        np.testing.assert_allclose(f.T_world_cam, poses[i], atol=1e-9)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_allclose(f.depth, depth[i], atol=1e-6)


def test_colmap_distorted_model_is_refused(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_colmap(tmp_path / "cm", K, poses, rgb, depth, model="SIMPLE_RADIAL")
    with pytest.raises(InputError, match="image_undistorter"):
        open_recording(tmp_path / "cm")


def test_colmap_missing_depth(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    (tmp_path / "cm" / "depth" / "img1.npy").unlink()
    with pytest.raises(InputError, match=r"depth/img1\.png \(or \.npy\) not found"):
        open_recording(tmp_path / "cm")


# ---------------------------------------------------------------- bad input


def raises_naming(path, words=""):
    """pytest.raises for an InputError whose one-line message names ``path`` (and says ``words``)."""
    return pytest.raises(InputError, match=rf"^[^\n]*{re.escape(str(path))}[^\n]*{words}")


def test_nerfstudio_without_depth(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    rewrite_json(tmp_path / "ns", lambda meta: meta["frames"][0].pop("depth_file_path"))
    with raises_naming(tmp_path / "ns" / "transforms.json", "needs a depth map"):
        open_recording(tmp_path / "ns")


@pytest.mark.parametrize("model, extra", [("OPENCV_FISHEYE", {}), ("OPENCV", {"k1": 0.1}), ("EQUIRECTANGULAR", {})])
def test_nerfstudio_non_pinhole_is_refused(tmp_path, model, extra):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    rewrite_json(tmp_path / "ns", lambda meta: meta["frames"][0].update(camera_model=model, **extra))
    with raises_naming(tmp_path / "ns" / "transforms.json", "undistort"):
        open_recording(tmp_path / "ns")


def test_corrupt_json(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    path = tmp_path / "ns" / "transforms.json"
    path.write_text(path.read_text()[:-40])
    with raises_naming(path, "corrupt or truncated JSON"):
        open_recording(tmp_path / "ns")


@pytest.mark.parametrize("edit", [lambda fr: fr.update(transform_matrix="eye"), lambda fr: fr.update(fl_x="570"),
                                  lambda fr: fr.update(m3_stamp=None), lambda fr: fr.update(file_path=3)])
def test_nerfstudio_malformed_values(tmp_path, edit):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    rewrite_json(tmp_path / "ns", lambda meta: edit(meta["frames"][0]))
    with raises_naming(tmp_path / "ns" / "transforms.json"):
        open_recording(tmp_path / "ns")


@pytest.mark.parametrize("pose, words", [(np.diag([2.0, 2.0, 2.0, 1.0]), "non-rigid"),
                                         (np.full((4, 4), np.nan), "NaN")])
def test_bad_poses(tmp_path, pose, words):
    K, poses, rgb, depth = make_frames(2)
    poses[1] = pose
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    with raises_naming(tmp_path / "ns" / "transforms.json", words):
        list(open_recording(tmp_path / "ns"))
    write_3dmatch(tmp_path / "3dm", K, poses, rgb, depth, [0, 1])
    with raises_naming(tmp_path / "3dm" / "seq-01" / "frame-000001.pose.txt", words):
        list(open_recording(tmp_path / "3dm"))
    write_apc(tmp_path / "apc", K, poses, rgb, depth)
    with raises_naming(tmp_path / "apc" / "cam.info.txt", words):
        list(open_recording(tmp_path / "apc"))


def test_colmap_bad_pose_and_malformed_numbers(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    images = tmp_path / "cm" / "sparse" / "0" / "images.txt"
    good = images.read_text()
    lines = good.splitlines()
    parts = lines[4].split()
    images.write_text("\n".join(lines[:4] + [" ".join([parts[0], "nan"] + parts[2:])] + lines[5:]) + "\n")
    with raises_naming(images, "NaN"):
        open_recording(tmp_path / "cm")
    images.write_text(good.replace(" 1 img1.png", " 1.0x img1.png"))
    with raises_naming(images):
        open_recording(tmp_path / "cm")
    cameras = tmp_path / "cm" / "sparse" / "0" / "cameras.txt"
    cameras.write_text(cameras.read_text().replace("PINHOLE 32 24", "PINHOLE 32 twentyfour"))
    with raises_naming(cameras, "malformed number"):
        open_recording(tmp_path / "cm")


def test_truncated_png(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    png = tmp_path / "ns" / "images" / "1.png"
    png.write_bytes(png.read_bytes()[:200])
    rec = open_recording(tmp_path / "ns")  # images are read only when their frame is yielded
    with raises_naming(png, "corrupt or truncated image"):
        list(rec)


def test_malformed_3dmatch_and_apc_text(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    write_3dmatch(tmp_path / "3dm", K, poses, rgb, depth, [0, 1])
    (tmp_path / "3dm" / "seq-01" / "frame-000001.pose.txt").write_text("1 0 0 zero\n")
    with raises_naming(tmp_path / "3dm" / "seq-01" / "frame-000001.pose.txt", "malformed number"):
        list(open_recording(tmp_path / "3dm"))
    (tmp_path / "3dm" / "camera-intrinsics.txt").write_text("570 0 320\n0 570 240\n")
    with raises_naming(tmp_path / "3dm" / "camera-intrinsics.txt", "expected 9 numbers, found 6"):
        open_recording(tmp_path / "3dm")
    write_apc(tmp_path / "apc", K, poses, rgb, depth)
    info = tmp_path / "apc" / "cam.info.txt"
    text = info.read_text()
    info.write_text(text.replace("# Objects: [", "# Objects: [oops"))
    with raises_naming(info, "Objects"):
        open_recording(tmp_path / "apc")
    info.write_text(text[: text.index("for frame-000001") + 40])  # truncated in the last pose
    with raises_naming(info, "expected 16"):
        open_recording(tmp_path / "apc")
    (tmp_path / "apc" / "masks" / "duck.thresh.txt").write_text("")
    info.write_text(text)
    with raises_naming(tmp_path / "apc" / "masks" / "duck.thresh.txt", "expected 1 numbers"):
        open_recording(tmp_path / "apc")


def test_sizes_that_disagree(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, [np.ones((12, 16), np.float32)])
    with raises_naming(tmp_path / "ns", "differ in size"):
        list(open_recording(tmp_path / "ns"))
    write_nerfstudio(tmp_path / "ns2", K, poses, rgb, depth)
    rewrite_json(tmp_path / "ns2", lambda meta: meta.update(w=64, h=48))
    with raises_naming(tmp_path / "ns2" / "images" / "0.png", "32x24 pixels but"):
        list(open_recording(tmp_path / "ns2"))


@pytest.mark.parametrize("reader", READERS)
def test_empty_folder_and_missing_path(tmp_path, reader):
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(empty, "is an empty folder"):
        open_recording(empty)
    with raises_naming(empty, "is not a"):
        reader(empty)
    missing = tmp_path / "missing"
    with raises_naming(missing, "does not exist"):
        open_recording(missing)
    with raises_naming(missing, "does not exist"):
        reader(missing)


def test_real_3dmatch_malformed_pose(tmp_path, realdata):
    copy = tmp_path / "3dm"
    shutil.copytree(realdata / MATCH, copy)
    (copy / "seq-01" / "frame-000001.pose.txt").write_text("1 0 0 zero\n")
    with raises_naming(copy / "seq-01" / "frame-000001.pose.txt", "malformed number"):
        list(open_recording(copy))


def test_real_apc_truncated_depth_png(tmp_path, realdata):
    copy = tmp_path / "apc"
    shutil.copytree(realdata / APC, copy, ignore=shutil.ignore_patterns("raw", "segm"))
    png = copy / "frame-000003.depth.png"
    png.write_bytes(png.read_bytes()[:1000])
    with raises_naming(png, "corrupt or truncated image"):
        list(open_recording(copy))


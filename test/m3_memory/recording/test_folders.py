import json
import shutil

import numpy as np
import pytest
from scipy.spatial import cKDTree
from transforms3d.euler import euler2mat

from m3_memory.conventions import backproject, depth_to_u16, invert_T, make_T, quat_wxyz_from_T
from m3_memory.errors import InputError
from m3_memory.recording import detect_format, open_recording
from m3_memory.recording.folders import decode_apc_depth
from m3_memory.recording.images import write_png

APC = "apc2016_realsense_shelf/data/sample/scene-0000"
MATCH = "nvblox_3dmatch_sun3d/nvblox/tests/data/3dmatch"


def alignment_median(a, b, stride=4):
    """Median distance (m) from frame b's points to frame a's, both in the world frame."""
    pa = backproject(a.depth, a.K, a.T_world_cam, stride)
    pb = backproject(b.depth, b.K, b.T_world_cam, stride)
    return float(np.median(cKDTree(pa).query(pb)[0]))


def test_3dmatch(realdata):
    rec = open_recording(realdata / MATCH)
    assert rec.format_name == "3dmatch" and len(rec) == 5
    frames = list(rec)
    assert len(frames) == 5
    f = frames[0]
    np.testing.assert_allclose(f.K, [[570.342205, 0, 320], [0, 570.342205, 240], [0, 0, 1]])
    valid = f.depth[f.depth > 0]
    assert 0.5 < np.median(valid) < 5.0 and valid.max() < 8.0  # millimetre PNG read as metres
    assert alignment_median(frames[0], frames[1]) < 0.05
    # a seq-* folder on its own reads the same frames
    assert len(list(open_recording(realdata / MATCH / "seq-01"))) == 5


def test_apc2016(realdata):
    rec = open_recording(realdata / APC)
    assert rec.format_name == "apc2016" and len(rec) == 15
    assert rec.objects == ["creativity_chenille_stems", "i_am_a_bunny_book", "kleenex_tissue_box",
                           "laugh_out_loud_joke_book"]
    frames = list(rec)
    f = frames[0]
    assert f.K[0, 0] == pytest.approx(615.195190) and f.K[0, 2] == pytest.approx(298.442688)
    valid = f.depth > 0
    assert 0.15 < valid.mean() < 0.4  # sparse F200 depth, ~26% valid
    assert 0.3 < np.median(f.depth[valid]) < 1.5
    assert set(f.masks) == set(rec.objects) and f.masks["kleenex_tissue_box"].sum() > 1000
    assert alignment_median(frames[0], frames[1]) < 0.05


def test_apc_depth_bit_rotation():
    metres = np.array([0.0, 0.5, 1.2345, 3.0])
    stored_units = np.rint(metres * 10000).astype(np.uint32)
    raw = (((stored_units >> 13) | (stored_units << 3)) & 0xFFFF).astype(np.uint16)  # rotate left by 3
    np.testing.assert_allclose(decode_apc_depth(raw), metres, atol=1e-4)


def make_frames(n=3, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[40.0, 0, 15.5], [0, 41.0, 11.5], [0, 0, 1]])
    poses = [make_T(euler2mat(*rng.uniform(-np.pi, np.pi, 3)), rng.normal(size=3)) for _ in range(n)]
    rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    depth = [np.round(rng.uniform(0.3, 3, (h, w)), 3).astype(np.float32) for _ in range(n)]
    return K, poses, rgb, depth


def write_nerfstudio(root, K, poses, rgb, depth):
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    frames = []
    for i, (T, c, d) in enumerate(zip(poses, rgb, depth)):
        write_png(root / "images" / f"{i}.png", c)
        write_png(root / "depth" / f"{i}.png", depth_to_u16(d))
        gl = T @ np.diag([1, -1, -1, 1])
        frames.append({"file_path": f"images/{i}.png", "depth_file_path": f"depth/{i}.png",
                       "transform_matrix": gl.tolist()})
    meta = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
            "w": rgb[0].shape[1], "h": rgb[0].shape[0], "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))


def test_nerfstudio(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    frames = list(open_recording(tmp_path / "ns"))
    assert len(frames) == 3
    for f, T, c, d in zip(frames, poses, rgb, depth):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-12)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_allclose(f.depth, d, atol=1e-6)


def test_nerfstudio_synthetic_masks(synth):
    rec = open_recording(synth.folder)
    assert "yellow bath duck" in rec.objects
    f = next(iter(rec))
    assert f.masks["yellow bath duck"].any()


def write_colmap(root, K, poses, rgb, depth, model="PINHOLE"):
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "depth").mkdir()
    params = f"{K[0, 0]} {K[1, 1]} {K[0, 2] + 0.5} {K[1, 2] + 0.5}" if model == "PINHOLE" else \
        f"{K[0, 0]} {K[0, 2] + 0.5} {K[1, 2] + 0.5} 0.01"
    (root / "sparse" / "0" / "cameras.txt").write_text(
        f"# camera list\n1 {model} {rgb[0].shape[1]} {rgb[0].shape[0]} {params}\n")
    lines = ["# image list"]
    for i, (T, c, d) in enumerate(zip(poses, rgb, depth)):
        T_cw = invert_T(T)
        q = quat_wxyz_from_T(T_cw)
        lines += [f"{i + 1} {' '.join(repr(float(x)) for x in q)} {' '.join(repr(float(x)) for x in T_cw[:3, 3])} 1 img{i}.png", ""]
        write_png(root / "images" / f"img{i}.png", c)
        np.save(root / "depth" / f"img{i}.npy", d)
    (root / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")


def test_colmap(tmp_path):
    K, poses, rgb, depth = make_frames()
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    assert detect_format(tmp_path / "cm") == "colmap"
    frames = list(open_recording(tmp_path / "cm"))
    assert len(frames) == 3
    for f, T, c, d in zip(frames, poses, rgb, depth):
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-9)
        np.testing.assert_allclose(f.K, K)
        np.testing.assert_array_equal(f.rgb, c)
        np.testing.assert_array_equal(f.depth, d)


def test_colmap_distorted_model_is_refused(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_colmap(tmp_path / "cm", K, poses, rgb, depth, model="SIMPLE_RADIAL")
    with pytest.raises(InputError, match="undistort"):
        open_recording(tmp_path / "cm")


def test_colmap_missing_depth(tmp_path):
    K, poses, rgb, depth = make_frames(2)
    write_colmap(tmp_path / "cm", K, poses, rgb, depth)
    (tmp_path / "cm" / "depth" / "img1.npy").unlink()
    with pytest.raises(InputError, match="img1"):
        open_recording(tmp_path / "cm")


def test_nerfstudio_without_depth(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    del meta["frames"][0]["depth_file_path"]
    (tmp_path / "ns" / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="needs a depth map"):
        open_recording(tmp_path / "ns")


@pytest.mark.parametrize("pose, words", [(np.diag([2.0, 2.0, 2.0, 1.0]), "non-rigid"),
                                         (np.full((4, 4), np.nan), "NaN")])
def test_bad_poses(tmp_path, pose, words):
    K, poses, rgb, depth = make_frames(2)
    poses[1] = pose
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    with pytest.raises(InputError, match=words):
        list(open_recording(tmp_path / "ns"))


def test_depth_and_colour_of_different_sizes(tmp_path):
    K, poses, rgb, depth = make_frames(1)
    depth = [np.ones((12, 16), np.float32)]
    write_nerfstudio(tmp_path / "ns", K, poses, rgb, depth)
    with pytest.raises(InputError, match="differ in size"):
        list(open_recording(tmp_path / "ns"))


def test_3dmatch_malformed_pose(tmp_path, realdata):
    copy = tmp_path / "3dm"
    shutil.copytree(realdata / MATCH, copy)
    (copy / "seq-01" / "frame-000001.pose.txt").write_text("1 0 0 zero\n")
    with pytest.raises(InputError, match="frame-000001.pose.txt"):
        list(open_recording(copy))


def test_apc_truncated_depth_png(tmp_path, realdata):
    copy = tmp_path / "apc"
    shutil.copytree(realdata / APC, copy)
    png = copy / "frame-000003.depth.png"
    png.write_bytes(png.read_bytes()[:1000])
    with pytest.raises(InputError, match="frame-000003.depth.png"):
        list(open_recording(copy))

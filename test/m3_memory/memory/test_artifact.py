import json

import numpy as np
import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.memory.artifact import FORMAT_VERSION, CameraView, Gaussians, Memory, ModelEntry, load_memory, save_memory
from m3_memory.memory.attention import MemoryBank
from m3_memory.robot_pose import RobotPose


def make_memory(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    gaussians = Gaussians(means=r(n, 3), quats=r(n, 4), log_scales=r(n, 3) - 4, opacity_logits=r(n), sh_dc=r(n, 3),
                          sh_rest=r(n, 3, 3), queries=r(n, 48))
    banks = {"clip": MemoryBank.create("clip", r(30, 64), 16), "dinov2": MemoryBank.create("dinov2", r(20, 32), 32)}
    models = [ModelEntry("clip", 64, (0, 16), 0.8, 0.05, False, "fixture"),
              ModelEntry("dinov2", 32, (16, 48), 0.75, 0.05, False, "vit_small")]
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    cameras = [CameraView("f0", K, 160, 120, np.eye(4)), CameraView("f8", K, 160, 120, np.eye(4), "test")]
    return Memory(gaussians, banks, models, source="synthetic", training={"iterations": 10}, cameras=cameras)


def test_round_trip(tmp_path):
    mem = make_memory()
    path = save_memory(tmp_path / "scene.m3", mem)
    back = load_memory(path)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest", "queries"):
        torch.testing.assert_close(getattr(back.gaussians, name), getattr(mem.gaussians, name))
    for name, bank in mem.banks.items():
        torch.testing.assert_close(back.banks[name].psc, bank.psc)
        torch.testing.assert_close(back.banks[name].W, bank.W)
    assert back.models == mem.models and back.training == {"iterations": 10}
    torch.testing.assert_close(back.queries_of("dinov2"), mem.gaussians.queries[:, 16:48])
    assert [(c.name, c.split, c.width) for c in back.cameras] == [("f0", "train", 160), ("f8", "test", 160)]
    np.testing.assert_array_equal(back.cameras[0].K, mem.cameras[0].K)


def test_extra_files_arrive_with_the_memory(tmp_path):
    def extra(d):
        (d / "report").mkdir()
        (d / "report" / "note.txt").write_text("hello")

    path = save_memory(tmp_path / "scene.m3", make_memory(), extra=extra)
    assert (path / "report" / "note.txt").read_text() == "hello"

    def failing(d):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_memory(tmp_path / "other.m3", make_memory(), extra=failing)
    assert not (tmp_path / "other.m3").exists() and list(tmp_path.glob(".other*")) == []


def test_standard_readers_open_the_ply(tmp_path):
    import open3d as o3d
    from plyfile import PlyData

    mem = make_memory()
    path = save_memory(tmp_path / "scene.m3", mem)
    names = [p.name for p in PlyData.read(str(path / "gaussians.ply"))["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert {"opacity", "scale_2", "rot_3", "f_rest_8", "q_0", "q_47"} <= set(names)
    pcd = o3d.io.read_point_cloud(str(path / "gaussians.ply"))
    np.testing.assert_allclose(np.asarray(pcd.points), mem.gaussians.means.numpy(), atol=1e-6)


def test_overwrite_replaces_whole_memory(tmp_path):
    save_memory(tmp_path / "scene.m3", make_memory(seed=0))
    save_memory(tmp_path / "scene.m3", make_memory(n=50, seed=1))
    assert len(load_memory(tmp_path / "scene.m3").gaussians) == 50
    assert [p.name for p in tmp_path.iterdir()] == ["scene.m3"]  # no temporary leftovers


def test_failed_write_leaves_nothing(tmp_path):
    mem = make_memory()
    mem.models[0].query_slice = (0, 17)  # does not match the bank's 16 query dims
    with pytest.raises(InputError, match="does not match"):
        save_memory(tmp_path / "scene.m3", mem)
    assert list(tmp_path.iterdir()) == []


def test_bad_artifacts(tmp_path):
    path = save_memory(tmp_path / "scene.m3", make_memory())
    data = bytearray((path / "memory.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "memory.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="memory.safetensors: checksum mismatch"):
        load_memory(path)

    path = save_memory(tmp_path / "b.m3", make_memory())
    meta = json.loads((path / "meta.json").read_text())
    meta["version"] = FORMAT_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="newer m3"):
        load_memory(path)

    path = save_memory(tmp_path / "c.m3", make_memory())
    (path / "gaussians.ply").unlink()
    with pytest.raises(InputError, match="gaussians.ply is missing"):
        load_memory(path)

    with pytest.raises(InputError, match="does not exist"):
        load_memory(tmp_path / "none.m3")


def test_robot_pose_round_trip(tmp_path):
    mem = make_memory()
    mem.robot_pose = RobotPose.from_xyz_yaw(0.05, 0.83, 0.55, -np.pi / 2, source="m3 build --robot-pose")
    back = load_memory(save_memory(tmp_path / "scene.m3", mem)).robot_pose
    np.testing.assert_array_equal(back.T_world_base, mem.robot_pose.T_world_base)
    assert back.T_world_base.dtype == np.float64
    assert (back.frame, back.source) == ("base_link", "m3 build --robot-pose")
    assert load_memory(save_memory(tmp_path / "none.m3", make_memory())).robot_pose is None


def test_memory_without_robot_pose_key_loads_with_none(tmp_path):
    """Memories written before the robot pose existed have no such key in meta.json."""
    path = save_memory(tmp_path / "old.m3", make_memory())
    meta = json.loads((path / "meta.json").read_text())
    del meta["robot_pose"]
    (path / "meta.json").write_text(json.dumps(meta))
    assert load_memory(path).robot_pose is None


@pytest.mark.parametrize("pose, words", [
    ({"T_world_base": np.diag([1.0, 1.0, 2.0, 1.0]).tolist()}, "non-rigid"),
    ({"T_world_base": [[float("nan")] * 4] * 4}, "NaN"),
    ({"T_world_base": [[1.0, 0.0], [0.0, 1.0]]}, "shape"),
    ({"frame": "base_link"}, "KeyError"),
    ([1, 2, 3], "TypeError"),
])
def test_corrupt_robot_pose_is_refused_in_one_line(tmp_path, pose, words):
    path = save_memory(tmp_path / "scene.m3", make_memory())
    meta = json.loads((path / "meta.json").read_text())
    meta["robot_pose"] = pose
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="corrupt robot_pose") as err:
        load_memory(path)
    message = str(err.value)
    assert message.startswith(str(path / "meta.json")) and words in message and "\n" not in message


def test_gaussians_shape_check():
    with pytest.raises(InputError, match="quats"):
        Gaussians(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3, 3),
                  torch.zeros(3, 0, 3), torch.zeros(3, 4))

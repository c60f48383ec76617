"""The viewer without a browser: splat arrays, cameras, the session (ask, render, save, trace),
``m3 view --screenshot``, the missing-dependency line and the grasp preview's plan."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from m3_memory.cli import main
from m3_memory.conventions import make_T
from m3_memory.memory.artifact import Gaussians, load_memory
from m3_memory.query.camera import Camera
from m3_memory.synth import SynthConfig, SyntheticScene
from m3_memory.view.scene import browser_camera, project, splats_of


@pytest.fixture(scope="module")
def duck_centre():
    duck = SyntheticScene(SynthConfig(width=160, height=120, n_frames=10)).object("yellow bath duck")  # as `synth`
    return np.concatenate([np.asarray(p.mesh.sample_points_uniformly(5000).points) for p in duck.parts]).mean(0)


@pytest.fixture(scope="module")
def session(built_memory):
    from m3_memory.view.session import ViewSession

    return ViewSession(load_memory(built_memory[0]))


def test_splat_covariances_follow_rotation_and_scale():
    angle = 0.7  # about z
    q = torch.tensor([[np.cos(angle / 2), 0, 0, np.sin(angle / 2)]], dtype=torch.float32) * 3  # not normalised
    g = Gaussians(means=torch.zeros(1, 3), quats=q, log_scales=torch.log(torch.tensor([[0.1, 0.02, 0.05]])),
                  opacity_logits=torch.zeros(1), sh_dc=torch.zeros(1, 3), sh_rest=torch.zeros(1, 0, 3), queries=torch.zeros(1, 2))
    s = splats_of(g)
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(s.covariances[0], R @ np.diag([0.01, 0.0004, 0.0025]) @ R.T, atol=1e-6)
    np.testing.assert_allclose(s.rgbs[0], 0.5) and np.testing.assert_allclose(s.opacities[0], 0.5)


def test_browser_camera_projects_what_it_looks_at():
    T = make_T(np.eye(3), [0, 0, -1.0])
    from transforms3d.quaternions import mat2quat

    cam = browser_camera(mat2quat(T[:3, :3]), T[:3, 3], fov=np.deg2rad(60), aspect=2.0, width=400)
    assert (cam.width, cam.height) == (400, 200)
    uv, front = project(cam, np.array([[0, 0, 0.0], [0, np.tan(np.deg2rad(30)), 0]]))  # centre; top-edge ray, +y down
    assert front.all()
    np.testing.assert_allclose(uv[0], [199.5, 99.5], atol=1e-6)
    np.testing.assert_allclose(uv[1, 1], 99.5 + 100, atol=1e-6)


def test_session_finds_colours_renders_and_saves(session, duck_centre, tmp_path):
    answer = session.ask("yellow bath duck")
    r = answer.result
    assert r.found and np.linalg.norm(r.point_world - duck_centre) < 0.03, answer.report
    hot = answer.score > answer.bound
    assert hot[r.gaussians].mean() > 0.9 and hot.mean() < 0.2  # the target's Gaussians are the hot ones, few others
    assert np.abs(answer.colors[~hot] - 0.35 * session.splats.rgbs[~hot]).max() < 1e-6
    assert "target [" in answer.report and session.trace.recorded and len(session.trace.components) == 8
    cam = Camera.from_view(session.memory.cameras[3])
    picture = session.render(cam)
    assert picture.shape == (cam.height + 18, 2 * cam.width + 4, 3)
    left, right = picture[18:, :cam.width].astype(int), picture[18:, cam.width + 4:].astype(int)
    assert np.abs(left - right).mean() > 5  # the heat half differs from the colour half
    written = session.save(tmp_path / "saved", cam)
    assert sorted(p.name for p in written) == ["heatmap.png", "render.png", "trace.png"]
    assert all(Image.open(p).size[0] > 100 for p in written)

    from m3_memory.query.api import QueryConfig
    from m3_memory.view.session import ViewSession

    strict = ViewSession(session.memory, QueryConfig(min_score=0.99)).ask("yellow bath duck")
    assert not strict.result.found and strict.report.startswith("nothing relevant to 'yellow bath duck'")


def test_screenshot_is_rendered_headless(built_memory, tmp_path, capsys):
    out = tmp_path / "shot.png"
    assert main(["view", str(built_memory[0]), "--screenshot", str(out), "--query", "yellow bath duck", "--view", "3"]) == 0
    assert "target [" in capsys.readouterr().out
    image = Image.open(out)
    assert image.size[0] >= 2 * 160 and image.size[1] > 120 + 96  # the panel and the trace sheet under it
    assert main(["view", str(built_memory[0]), "--screenshot", str(tmp_path / "x.jpg")]) == 2
    assert main(["view", str(built_memory[0]), "--screenshot", str(out), "--view", "99"]) == 2


def test_missing_viser_says_what_to_install(built_memory, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser raises ImportError
    assert main(["view", str(built_memory[0]), "--port", "0"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m3: error: viser: is not installed") and "pip install viser" in err[0]


def test_grasp_preview_plans_and_animates_without_executing(session):
    viser = pytest.importorskip("viser")
    pytest.importorskip("yourdfpy")
    from m3_memory.view.robot import RobotPreview

    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        robot = RobotPreview(server, session.memory)
        assert robot.names[:6] == tuple(f"z1_joint{i}" for i in range(1, 7))
        answer = session.ask("yellow bath duck")
        plan = robot.plan_for(answer.result)
        assert plan.found, plan.message
        assert set(plan.waypoints) >= {"pre_grasp", "grasp", "lift"} and len(plan.q_trajectory) > 10
        lift, grasp = plan.waypoints["lift"][:3, 3], plan.waypoints["grasp"][:3, 3]
        assert lift[2] > grasp[2] + 0.05 and np.linalg.norm(grasp - answer.result.point_world) < 0.05
        robot.animate(plan, speed=1000).join(timeout=30)
    finally:
        server.stop()


def test_only_the_grasp_preview_imports_m3_grasp():
    """The viewer sits at the end of m3_memory's data flow; m3_grasp is loaded for --robot only."""
    import subprocess

    code = ("import sys\nimport m3_memory.view.app, m3_memory.view.cli, m3_memory.view.session\n"
            "print(any(m.startswith('m3_grasp') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_viewer_actions_without_a_browser(session, tmp_path):
    """The GUI's actions on a served viewer, with a stand-in for the browser's camera: ask,
    render from here, save and a shift-click trace."""
    pytest.importorskip("viser")
    from types import SimpleNamespace

    from transforms3d.quaternions import mat2quat

    from m3_memory.view.app import RENDER_WIDTH, Viewer

    view = session.memory.cameras[3]
    camera = SimpleNamespace(wxyz=mat2quat(view.T_world_cam[:3, :3]), position=view.T_world_cam[:3, 3],
                             fov=2 * np.arctan(view.height / 2 / view.K[1, 1]), aspect=view.width / view.height)
    client = SimpleNamespace(camera=camera)
    viewer = Viewer(session, port=0, out=tmp_path / "saved")
    try:
        assert viewer.url.startswith("http://127.0.0.1:")
        viewer.ask("yellow bath duck")
        assert "target [" in viewer.report.content and viewer.trace_panel is not None
        viewer.render_from(client)
        assert viewer.render_panel is not None
        assert viewer.render_panel.image.shape[1] == 2 * RENDER_WIDTH + 4
        viewer.save(client)
        assert viewer.status.content.startswith("saved ") and len(list((tmp_path / "saved").glob("*.png"))) == 3
        cam = viewer.camera_of(client)
        u, v = project(cam, session.answer.result.point_world[None])[0][0]
        viewer.trace_click(SimpleNamespace(client=client, screen_pos=(u / cam.width, v / cam.height)))
        assert viewer.trace_panel.label.startswith("trace of pixel (")
    finally:
        viewer.server.stop()

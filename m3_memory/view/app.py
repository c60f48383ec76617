"""``m3 view``: the memory in the browser (viser), with a text box, the target, renders, the trace
and (``--robot``) a grasp preview.

The scene: the memory's Gaussians as splats in their colours (world frame, z up), the source
cameras as frustums with thumbnails (m3's renders at those cameras), the query's target (a
sphere) and the object's oriented box. The GUI: a query box (each new text colours the splats by
relevancy and marks the target; the report line gives the score or "nothing relevant"),
"render from here" (colour | relevancy heat at the browser's current camera, m3's renderer, into
an image panel), "save" (heatmap.png, render.png, trace.png into the output folder), the trace
panel (the top components memory attention drew on for the target, their source patches and
weights; a shift-click in the scene traces the clicked pixel instead) and, with a robot, "plan grasp".
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from m3_memory.errors import InputError
from m3_memory.query.explain import explain_sheet, trace_pixel
from m3_memory.view.scene import browser_camera, render_colors, wxyz_of
from m3_memory.view.session import ViewSession

log = logging.getLogger("m3")
THUMB_WIDTH = 96  # pixels of a camera frustum's thumbnail
RENDER_WIDTH = 480  # pixels of "render from here"


class Viewer:
    """A running viewer: a viser server on ``host:port`` showing ``session``'s memory. ``out``:
    where "save" writes. ``robot``: add the grasp preview (needs the memory's robot pose)."""

    def __init__(self, session: ViewSession, host: str = "127.0.0.1", port: int = 8080, out: str | Path = "view",
                 robot: bool = False):
        import viser

        self.session, self.out = session, Path(out)
        self.lock = threading.Lock()  # one computation at a time; viser runs callbacks in threads
        self.server = server = viser.ViserServer(host=host, port=port, verbose=False)
        server.scene.set_up_direction("+z")
        memory = session.memory
        s = session.splats
        self.splats = server.scene.add_gaussian_splats("/memory", s.centers, s.covariances, s.rgbs, s.opacities)
        self._cameras(memory)
        if memory.cameras:  # behind the first source camera, looking at the middle of the memory
            centre = memory.gaussians.means.median(dim=0).values.double().numpy()
            eye = memory.cameras[0].T_world_cam[:3, 3]
            server.initial_camera.position = eye + 0.6 * (eye - centre)
            server.initial_camera.look_at = centre
        gui = server.gui
        self.query = gui.add_text("query", initial_value="", hint='e.g. "yellow bath duck", then Enter')
        self.report = gui.add_markdown("Type what to find.")
        self.render_button = gui.add_button("render from here")
        self.save_button = gui.add_button("save")
        self.status = gui.add_markdown("")
        self.shown = ""  # the query text whose answer is on screen
        self.render_panel = None
        self.trace_panel = None
        self.robot = None
        self.plan_button = None
        if robot:
            from m3_memory.view.robot import RobotPreview

            self.robot = RobotPreview(server, memory)
            self.plan_button = gui.add_button("plan grasp")
            self.plan_button.on_click(lambda event: self._run(self.plan_grasp))
        self.query.on_update(lambda event: self._run(lambda: self.ask(self.query.value)))
        self.render_button.on_click(lambda event: self._run(lambda: self.render_from(event.client)))
        self.save_button.on_click(lambda event: self._run(lambda: self.save(event.client)))
        server.scene.on_click(modifier="shift")(lambda event: self._run(lambda: self.trace_click(event)))

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def _cameras(self, memory) -> None:
        """The source cameras as frustums with thumbnails rendered from the memory."""
        from m3_memory.query.camera import Camera

        for i, view in enumerate(memory.cameras):
            cam = Camera.from_view(view)
            thumb = render_colors(memory, cam.scaled(THUMB_WIDTH / cam.width))
            fov = 2 * np.arctan(view.height / 2 / view.K[1, 1])
            T = view.T_world_cam
            self.server.scene.add_camera_frustum(f"/cameras/{i}", fov=float(fov), aspect=view.width / view.height,
                                                 scale=0.05, image=thumb, wxyz=wxyz_of(T[:3, :3]), position=T[:3, 3],
                                                 color=(120, 120, 120) if view.split == "train" else (200, 120, 40))

    def _run(self, work) -> None:
        """Run a GUI action; its failure becomes the status line instead of a traceback."""
        with self.lock:
            try:
                work()
            except InputError as err:
                self.status.content = f"**{err.problem}**"
            except Exception as err:  # noqa: BLE001 - the viewer keeps running; the log has the details
                log.exception("viewer action failed")
                self.status.content = f"**failed: {type(err).__name__}: {err}**"

    def ask(self, text: str) -> None:
        """Colour the splats by relevancy to ``text``, mark the target and its box, trace it."""
        if not text.strip() or " ".join(text.split()) == self.shown:
            return  # nothing, or what is shown already (keystrokes queue while a query runs)
        self.status.content = ""
        answer = self.session.ask(text)
        s = self.session.splats
        self.splats.set_gaussians(s.centers, s.covariances, answer.colors.astype(np.float32), s.opacities)
        r = answer.result
        scene = self.server.scene
        if r.found:
            scene.add_icosphere("/target", radius=0.012, color=(255, 0, 255), position=r.point_world)
            scene.add_box("/target_box", color=(255, 0, 255), dimensions=np.maximum(r.box.extent, 1e-3), wireframe=True,
                          wxyz=wxyz_of(r.box.R * np.sign(np.linalg.det(r.box.R))), position=r.box.center)
        else:
            for name in ("/target", "/target_box"):
                scene.remove_by_name(name)
        self.report.content, self.shown = answer.report, r.text
        self._show_trace(self.session.trace_picture(), "trace of the target")

    def _show_trace(self, picture: np.ndarray | None, label: str) -> None:
        if picture is None:
            return
        if self.trace_panel is None:
            self.trace_panel = self.server.gui.add_image(picture, label=label, format="png")
        else:
            self.trace_panel.image, self.trace_panel.label = picture, label

    def camera_of(self, client):
        """The m3 camera of a browser client's current view."""
        c = client.camera
        return browser_camera(np.asarray(c.wxyz), np.asarray(c.position), float(c.fov), float(c.aspect), RENDER_WIDTH)

    def render_from(self, client) -> None:
        """Render colour | heat at the client's camera into the image panel."""
        picture = self.session.render(self.camera_of(client))
        if self.render_panel is None:
            self.render_panel = self.server.gui.add_image(picture, label="render from here", format="png")
        else:
            self.render_panel.image = picture

    def save(self, client) -> None:
        written = self.session.save(self.out, self.camera_of(client))
        self.status.content = "saved " + ", ".join(str(p) for p in written)

    def trace_click(self, event) -> None:
        """Trace the clicked pixel of the client's view: the components behind its rendered feature."""
        camera = self.camera_of(event.client)
        u = min(camera.width - 1, int(event.screen_pos[0] * camera.width))
        v = min(camera.height - 1, int(event.screen_pos[1] * camera.height))
        trace = trace_pixel(self.session.memory, camera, u, v, self.session.config.model)
        result = self.session.answer.result if self.session.answer is not None else None
        if result is None or not trace.recorded:
            self.status.content = trace.message
            return
        self._show_trace(np.asarray(explain_sheet(self.session.memory, None, result, trace)), f"trace of pixel ({u}, {v})")

    def plan_grasp(self) -> None:
        """Plan a grasp of the current target and animate it (never executed)."""
        a = self.session.answer
        if a is None or not a.result.found:
            self.status.content = "ask for something first: the grasp needs a target"
            return
        plan = self.robot.plan_for(a.result)
        if plan.found:
            self.robot.animate(plan)
            self.status.content = f"grasp planned ({plan.kind}, {plan.duration:.1f} s): playing pre-grasp, grasp, lift"
        else:
            self.status.content = f"no grasp: {plan.message}"

"""One viewer session without the browser: ask the memory in words, render from a camera, trace
the answer, save pictures. :mod:`m3_memory.view.app` binds it to viser's GUI; ``m3 view
--screenshot`` uses it headless.

Queries use the Gaussian-level path (:func:`m3_memory.query.api.query_gaussians`): every
Gaussian's relevancy, no rendering, so the splats can be recoloured as one types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.memory.artifact import Memory
from m3_memory.query.api import QueryConfig, QueryResult, prepare, query_gaussians, text_model_for
from m3_memory.query.camera import Camera
from m3_memory.query.explain import Trace, explain_sheet, trace_gaussians
from m3_memory.query.relevancy import threshold_value
from m3_memory.query.spatial import MIN_OPACITY, gaussian_scores
from m3_memory.view.scene import Splats, panel, relevancy_colors, render_colors, splats_of


@dataclass
class Answer:
    """A query's answer as the viewer shows it: the result (target point, box, Gaussians, score),
    every Gaussian's relevancy ``score`` [N], the threshold ``bound`` and the splat colours [N, 3]."""

    result: QueryResult
    score: np.ndarray
    bound: float
    colors: np.ndarray

    @property
    def report(self) -> str:
        """One line for the GUI: the target and score, or "nothing relevant"."""
        r = self.result
        if not r.found:
            return f"nothing relevant to '{r.text}' (score {r.score:.3f})"
        p = r.point_world
        return f"'{r.text}': score {r.score:.3f}, target [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m, {len(r.gaussians)} Gaussians"


class ViewSession:
    """A loaded memory and what the viewer last computed (the answer, its trace)."""

    def __init__(self, memory: Memory, config: QueryConfig = QueryConfig(), weights: str | None = None):
        self.memory, self.config = memory, config
        self.text_model = text_model_for(memory, config.model, weights)
        self.splats: Splats = splats_of(memory.gaussians)
        self.answer: Answer | None = None
        self.trace: Trace | None = None
        prepare(memory, config)  # the Gaussian-level query's neighbourhoods and norms, once

    def ask(self, text: str) -> Answer:
        """Find ``text`` among the Gaussians; colour them by relevancy; trace the target."""
        result = query_gaussians(self.memory, text, self.config, self.text_model)
        emb = self.text_model.encode_text([" ".join(text.split()), *self._negatives()])  # [1 + k, d]
        score = gaussian_scores(self.memory, emb[0], emb[1:], self.config.method, self.config.model, self.config.neighbours)
        bright = self.splats.opacities[:, 0] >= MIN_OPACITY
        bound = max(threshold_value(score, bright, self.config.threshold), self.config.score_bound)
        self.answer = Answer(result, score, bound, relevancy_colors(self.splats.rgbs, score, bound))
        self.trace = trace_gaussians(self.memory, result.gaussians, self.config.model) if result.found else None
        return self.answer

    def _negatives(self) -> tuple[str, ...]:
        return self.text_model.canonical_negatives if self.config.negatives is None else self.config.negatives

    def render(self, camera: Camera) -> np.ndarray:
        """Colour | relevancy heat with the target at ``camera`` (uint8 RGB), m3's own renderer."""
        a = self.answer
        if a is None:
            return panel(self.memory, camera, None, "no query yet")
        return panel(self.memory, camera, a.colors, a.report, a.result.point_world, a.result.box)

    def trace_picture(self, camera: Camera | None = None) -> np.ndarray | None:
        """The trace sheet of the current answer (uint8 RGB): top components with source patches
        and weights; None before a query found something."""
        if self.answer is None or not self.answer.result.found or self.trace is None:
            return None
        return np.asarray(explain_sheet(self.memory, camera, self.answer.result, self.trace))

    def save(self, folder: str | Path, camera: Camera) -> list[Path]:
        """Write ``heatmap.png`` (the relevancy render at ``camera``), ``render.png`` (its colour
        render) and ``trace.png`` (the trace sheet, when there is an answer) into ``folder``."""
        from PIL import Image

        from m3_memory.outputs import write_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pictures = {"render.png": render_colors(self.memory, camera), "heatmap.png": self.render(camera)}
        trace = self.trace_picture()
        if trace is not None:
            pictures["trace.png"] = trace
        written = []
        for name, image in pictures.items():
            write_atomic(folder / name, lambda tmp, image=image: Image.fromarray(image).save(tmp, format="PNG"))
            written.append(folder / name)
        return written

"""Ask the memory in words: ``query_text`` (at a camera) and ``query_gaussians`` (in 3D).

query_text: render the memory's features at the camera, score them against the text
(LERF relevancy or cosine), take the largest connected region above Otsu's threshold (or a
fixed bound), lift it to 3D with depth (the rendered expected depth, or a live depth image
registered to that camera) and return its median point, points and oriented box. A region
whose mean score is below ``min_score`` is reported as "nothing relevant" (found False, no point).

query_gaussians: the same question asked of every Gaussian's own decoded query, without
rendering; see :mod:`m3_memory.query.spatial`.

All 3D outputs are in the memory's frame (metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from m3_memory.device import warn_cpu_fallback
from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel
from m3_memory.foundation.loaded import model_for_checkpoint, tokenizer
from m3_memory.memory.artifact import Memory, ModelEntry
from m3_memory.memory.attention import bank_spectrum
from m3_memory.query.camera import Camera
from m3_memory.query.relevancy import (
    METHODS,
    display_heatmap,
    largest_component,
    threshold_value,
)
from m3_memory.query.render import MIN_ALPHA, render_scores
from m3_memory.query.spatial import (
    MIN_OPACITY,
    NEIGHBOURS,
    best_cluster,
    centre_means,
    dbscan_members,
    gaussian_scores,
    gaussians_above,
    gaussians_in_aabb,
    near_any,
    prepare_gaussians,
)
from m3_memory.query.target import Box, check_depth, lift_region, oriented_box, robust_center

DEFAULT_MIN_SCORE = {"relevancy": 0.1, "cosine": 0.3}  # measured on the fixture: bench/query.py "calibration"


@dataclass
class QueryConfig:
    """How a text query is answered.

    model: which of the memory's models answers (needs a text encoder). method: "relevancy"
    (LERF, against ``negatives``) or "cosine". negatives: None for the text model's own
    ``canonical_negatives`` (LERF's; the fixture CLIP's background classes for it).
    min_score: a region whose mean score is lower means "nothing relevant" (None: per-method
    default, DEFAULT_MIN_SCORE). threshold: "otsu" or a score bound for the region.
    render_scale: render at this fraction of the camera's resolution (scores are upsampled).
    min_alpha: pixels the Gaussians cover less than this are ignored. min_pixels: smallest region.
    cluster_eps (m), cluster_min_points: DBSCAN of relevant Gaussians. object_centre: complete the
    visible surface with the memory's Gaussians of the object (see :func:`object_gaussians`) and
    take the target point from them; the surface points stay the evidence (and the fallback).
    neighbours: a Gaussian is decoded from the opacity-weighted sum of this many nearest
    Gaussians' queries (see :mod:`m3_memory.query.spatial`). device: where the view is rendered and
    decoded (auto, cpu, cuda[:N]; :func:`m3_memory.device.resolve_device`); results come back on the CPU.
    """

    model: str = "clip"
    method: str = "relevancy"
    negatives: tuple[str, ...] | None = None
    min_score: float | None = None
    threshold: str | float = "otsu"
    render_scale: float = 1.0
    min_alpha: float = MIN_ALPHA
    min_pixels: int = 4
    cluster_eps: float = 0.02
    cluster_min_points: int = 5
    object_centre: bool = True
    neighbours: int = NEIGHBOURS
    backend: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(self.method, f"unknown scoring method; use {' or '.join(METHODS)}")
        if isinstance(self.threshold, str) and self.threshold != "otsu":
            raise InputError(self.threshold, "threshold must be 'otsu' or a number")
        if not 0 < self.render_scale <= 1:
            raise InputError("render_scale", f"must be in (0, 1], got {self.render_scale}")

    @property
    def score_bound(self) -> float:
        return DEFAULT_MIN_SCORE[self.method] if self.min_score is None else float(self.min_score)


@dataclass
class QueryResult:
    """The answer. score: mean score over the target region (or cluster). point_world [3], points_world
    [M, 3], box: in the memory's frame (m). heatmap [H, W] float32 in [0, 1] for display and mask
    [H, W] bool at the camera's resolution (empty [0, 0] for query_gaussians). gaussians: indices of
    the Gaussians that make up the target. warnings: non-fatal problems (e.g. a truncated query)."""

    text: str
    found: bool
    score: float
    message: str
    point_world: np.ndarray | None = None
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box: Box | None = None
    heatmap: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    T_world_cam: np.ndarray | None = None
    gaussians: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"text": self.text, "found": self.found, "score": self.score, "message": self.message,
                "point_world": None if self.point_world is None else self.point_world.tolist(),
                "box": None if self.box is None else self.box.to_json(), "num_points": len(self.points_world),
                "num_gaussians": len(self.gaussians),
                "T_world_cam": None if self.T_world_cam is None else self.T_world_cam.tolist(), "warnings": self.warnings}


def model_entry(memory: Memory, name: str) -> ModelEntry:
    entry = next((m for m in memory.models if m.name == name), None)
    if entry is None:
        raise InputError(name, f"not in this memory (models: {', '.join(m.name for m in memory.models)})")
    return entry


def text_model_for(memory: Memory, model_name: str = "clip", weights: str | None = None, device: str = "cpu"
                   ) -> FoundationModel:
    """The foundation model (with its text encoder) that built ``memory``'s ``model_name`` features.

    The memory records the checkpoint identity (``arch:tag`` or ``arch:file@hash``): a hub tag is
    loaded as recorded, a weights file must be passed as ``weights`` and must be the same file;
    the fixture CLIP is recognised by its architecture. Loaded models are cached per process
    and ``device``.
    """
    entry = model_entry(memory, model_name)
    model = model_for_checkpoint(model_name, entry.checkpoint, weights, device)
    if entry.checkpoint and model.checkpoint != entry.checkpoint:
        raise InputError(weights or model_name, f"these weights ({model.checkpoint}) are not the ones the memory was "
                         f"built with ({entry.checkpoint}); their text embeddings would not match its features")
    if not model.has_text:
        raise InputError(model_name, "has no text encoder; text queries need a vision-language model such as clip")
    if model.feature_dim != entry.feature_dim:
        raise InputError(model_name, f"feature dim {model.feature_dim} differs from the memory's {entry.feature_dim}")
    return model


def _context_warning(text_model: FoundationModel, text: str) -> list[str]:
    """A warning when ``text`` is longer than the text encoder's context (it is then truncated)."""
    arch = getattr(text_model, "arch", None)
    if arch is None:
        return []
    tok = tokenizer(arch)
    encode, context = getattr(tok, "encode", None), getattr(tok, "context_length", None)
    if encode is None or context is None:
        return []
    n = len(encode(text)) + 2  # start and end tokens
    return [f"query is {n} tokens, longer than the text encoder's {context}: truncated"] if n > context else []


def _embeddings(text_model: FoundationModel, text: str, config: QueryConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(text embedding [d], negatives [k, d]) for a validated query."""
    negatives = text_model.canonical_negatives if config.negatives is None else config.negatives
    emb = text_model.encode_text([text, *negatives])  # [1 + k, d]
    return emb[0], emb[1:]


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError("query", "is empty; ask for something, e.g. \"yellow bath duck\"")
    return " ".join(text.split())


def _prepare(memory: Memory, text: str, config: QueryConfig, text_model: FoundationModel | None
             ) -> tuple[str, torch.Tensor, torch.Tensor, list[str]]:
    text = _check_text(text)
    model_entry(memory, config.model)
    text_model = text_model or text_model_for(memory, config.model)
    warnings = _context_warning(text_model, text)
    t, neg = _embeddings(text_model, text, config)
    return text, t, neg, warnings


def _upsample(x: np.ndarray, height: int, width: int) -> np.ndarray:
    if x.shape == (height, width):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def query_text(memory: Memory, text: str, camera: Camera, depth: np.ndarray | None = None,
               config: QueryConfig = QueryConfig(), text_model: FoundationModel | None = None) -> QueryResult:
    """Find ``text`` in what the memory shows at ``camera``; lift it to 3D with ``depth``
    (float32 metres [H, W] registered to the camera, e.g. the robot's live depth; None: the
    memory's rendered expected depth). See the module doc."""
    text, t, neg, warnings = _prepare(memory, text, config, text_model)
    if depth is not None:
        depth = check_depth(depth, camera)
    warn_cpu_fallback()  # the inputs are good: the work starts
    view = render_scores(memory, camera.scaled(config.render_scale) if config.render_scale < 1 else camera, t, neg,
                         config.method, config.model, config.min_alpha, config.backend, device=config.device)
    H, W = camera.height, camera.width
    score = _upsample(view.score.numpy(), H, W)  # [H, W]
    valid = _upsample(view.valid.numpy().astype(np.float32), H, W) >= 0.5  # [H, W]
    bound = threshold_value(score, valid, config.threshold) if valid.mean() >= 0.01 else float("inf")
    result = QueryResult(text, False, 0.0, "", heatmap=display_heatmap(score, valid, max(bound, config.score_bound)),
                         mask=np.zeros((H, W), bool), T_world_cam=camera.T_world_cam, warnings=warnings)
    if valid.mean() < 0.01:
        result.message = "the camera sees (almost) nothing of the memory: no target"
        return result
    mask = largest_component(valid & (score > bound))
    result.score = float(score[mask].mean()) if mask.any() else 0.0
    if mask.sum() < config.min_pixels or result.score < config.score_bound:
        result.message = f"nothing relevant to {text!r} in view (score {result.score:.3f} < {config.score_bound})"
        return result
    result.mask, result.heatmap = mask, display_heatmap(score, valid, bound)  # found: the region is hot
    if depth is None:
        depth = _upsample(view.depth.numpy(), H, W) * valid
    points = lift_region(mask, depth, camera)
    if len(points) == 0:
        result.message = f"found {text!r} in the image but no valid depth in its region"
        return result
    result.found, result.points_world = True, points
    members = object_gaussians(memory, points, t, neg, bound, config) if config.object_centre else []
    if len(members):
        body = centre_means(memory)[members]  # [m, 3]
        result.gaussians, result.point_world, result.box = members, robust_center(body), oriented_box(body)
        result.message = (f"found {text!r}: {mask.sum()} pixels, score {result.score:.3f}, centre of "
                          f"{len(members)} memory Gaussians of the object")
    else:
        result.point_world, result.box = robust_center(points), oriented_box(points)
        result.message = f"found {text!r}: {mask.sum()} pixels, score {result.score:.3f}, centre of the visible surface"
    return result


def object_gaussians(memory: Memory, points: np.ndarray, t: torch.Tensor, neg: torch.Tensor, bound: float,
                     config: QueryConfig, margin: float = 0.1) -> np.ndarray:
    """Indices of the memory's Gaussians that make up the object whose visible surface is ``points``
    [M, 3]: Gaussians within ``margin`` m of the surface's bounding box are scored against the text;
    those above ``bound`` are clustered (DBSCAN) and the cluster holding most Gaussians within
    ``cluster_eps`` of the surface is the object. Empty when no cluster touches the surface (e.g. the
    object moved since the scan: then the live surface is the answer)."""
    means = centre_means(memory)  # [N, 3]
    near = gaussians_in_aabb(memory, points.min(0) - margin, points.max(0) + margin)
    if len(near) == 0:
        return near
    bright = torch.sigmoid(memory.gaussians.opacity_logits[near]).numpy() >= MIN_OPACITY
    near = near[bright]
    cand = near[gaussians_above(memory, t, neg, config.method, bound, config.model, config.neighbours, near)]
    labels = dbscan_members(memory, cand, config.cluster_eps, config.cluster_min_points)
    if len(labels) == 0 or labels.max() < 0:
        return np.zeros(0, dtype=int)
    touching = near_any(means[cand], points, config.cluster_eps)  # [c]
    votes = np.bincount(labels[(labels >= 0) & touching], minlength=labels.max() + 1)
    if votes.max() == 0:
        return np.zeros(0, dtype=int)
    return cand[labels == int(np.argmax(votes))]


def query_gaussians(memory: Memory, text: str, config: QueryConfig = QueryConfig(),
                    text_model: FoundationModel | None = None) -> QueryResult:
    """Find ``text`` among the Gaussians themselves: decode each Gaussian's query, score it, cluster
    the relevant ones in 3D (DBSCAN) and return the best cluster's median point, means and box."""
    text, t, neg, warnings = _prepare(memory, text, config, text_model)
    warn_cpu_fallback()  # the inputs are good: the work starts
    score = gaussian_scores(memory, t, neg, config.method, config.model, config.neighbours)  # [N]
    bright = torch.sigmoid(memory.gaussians.opacity_logits).numpy() >= MIN_OPACITY
    bound = threshold_value(score, bright, config.threshold)
    relevant = np.nonzero(bright & (score > bound))[0]
    means = centre_means(memory)
    labels = dbscan_members(memory, relevant, config.cluster_eps, config.cluster_min_points)
    members = relevant[best_cluster(labels, score[relevant])]
    result = QueryResult(text, False, float(score[members].mean()) if len(members) else 0.0, "", warnings=warnings)
    if len(members) == 0 or result.score < config.score_bound:
        result.message = f"nothing relevant to {text!r} in the memory (score {result.score:.3f} < {config.score_bound})"
        return result
    points = means[members]
    result.found, result.points_world, result.gaussians = True, points, members
    result.point_world, result.box = robust_center(points), oriented_box(points)
    result.message = f"found {text!r}: {len(members)} Gaussians, score {result.score:.3f}"
    return result


def find_in_memory(memory: Memory, text: str, config: QueryConfig = QueryConfig(),
                   text_model: FoundationModel | None = None, survey_scale: float = 0.5) -> QueryResult:
    """Find ``text`` from the memory's own source cameras: score every source view at
    ``survey_scale`` resolution, then answer at full resolution from the view whose target
    region scored highest. For when no robot camera pose is given."""
    if not memory.cameras:
        raise InputError("memory", "stores no source cameras; give a camera pose (--pose)")
    text = _check_text(text)
    text_model = text_model or text_model_for(memory, config.model)
    survey = replace(config, render_scale=min(config.render_scale, survey_scale))
    best, best_score = None, -np.inf
    for view in memory.cameras:
        r = query_text(memory, text, Camera.from_view(view), config=survey, text_model=text_model)
        if r.found and r.score > best_score:
            best, best_score = view, r.score
    if best is None:
        return QueryResult(text, False, 0.0, f"nothing relevant to {text!r} from any of the memory's "
                           f"{len(memory.cameras)} source views")
    return query_text(memory, text, Camera.from_view(best), config=config, text_model=text_model)


def prepare(memory: Memory, config: QueryConfig = QueryConfig(), gaussians: bool = True) -> None:
    """Do after loading what the first query would otherwise pay for: the memory bank's spectrum
    (text scores without the full decode) and, with ``gaussians``, the k-d tree, neighbourhood
    queries and unit decoded features (or, for a memory too large to keep them, their norms) of
    the Gaussian-level query (:func:`query_gaussians`) and of the object centre, with the features'
    sketch and the Gaussians' neighbour graph at ``config.cluster_eps``
    (:func:`m3_memory.query.spatial.prepare_gaussians`). Optional: queries compute and keep the
    same on first use. The query node, the grasp node and the demo call it after loading."""
    model_entry(memory, config.model)
    bank_spectrum(memory.banks[config.model])
    if gaussians:
        prepare_gaussians(memory, config.model, config.neighbours, config.cluster_eps)


def gaussians_in_box(memory: Memory, box: Box, margin: float = 0.01) -> np.ndarray:
    """Indices of the Gaussians whose centres lie in ``box`` grown by ``margin`` metres per side."""
    means = memory.gaussians.means.numpy().astype(np.float64)
    local = (means - box.center) @ box.R  # [N, 3] in the box's axes
    return np.nonzero(np.all(np.abs(local) <= box.extent / 2 + margin, axis=1))[0]

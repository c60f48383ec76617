"""The training loop: render colour + principal queries, decode features through memory
attention, optimise Gaussians (and optionally the projections) with the authors' losses.

Cameras are :class:`View` s prepared by the build (images at training resolution, gsplat
intrinsics). ``TrainConfig.views_per_iteration`` views per iteration (3DGS: one), split over
the ranks of a data-parallel launch (:mod:`~m3_memory.training.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from gsplat.strategy import MCMCStrategy

from m3_memory.conventions import invert_T
from m3_memory.distributed import Group
from m3_memory.errors import BuildFailed
from m3_memory.memory.artifact import Gaussians
from m3_memory.memory.attention import MemoryBank
from m3_memory.render.rasterization import means2d_grad, rasterization
from m3_memory.render.reference import gsplat_K
from m3_memory.render.sh import sh_to_rgb
from m3_memory.training.config import TrainConfig
from m3_memory.training.distributed import broadcast_gaussians
from m3_memory.training.losses import (
    Decoder,
    depth_errors,
    depth_loss,
    feature_loss,
    lookup,
    map_pixel_centres,
    psnr,
    rgb_loss,
    sample_pixels,
)
from m3_memory.training.poses import PoseCorrections
from m3_memory.training.strategy import PER_GAUSSIAN, DensityControl


@dataclass
class View:
    """One training or held-out camera at training resolution.

    rgb [H, W, 3] float in [0, 1]; depth [H, W] metres (0 = invalid); K [3, 3] OpenCV
    convention at this resolution; T_world_cam [4, 4]; features: per model [h, w, d].
    """

    name: str
    rgb: torch.Tensor
    depth: torch.Tensor
    K: np.ndarray
    T_world_cam: np.ndarray
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]  # width, height


def scene_extent(views: list[View]) -> float:
    """3DGS's scene scale: 1.1 x the largest camera distance from the cameras' mean centre (m),
    at least 0.1 m."""
    centres = np.stack([v.T_world_cam[:3, 3] for v in views])
    return max(0.1, 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max()))


def _adam(param: torch.Tensor, lr: float, name: str) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": [param], "lr": lr, "name": name}], eps=1e-15)


def _lr_schedule(start: float, end: float, step: int, total: int) -> float:
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return math.exp((1 - t) * math.log(start) + t * math.log(end))


class Trainer:
    """Owns the parameters, one Adam optimiser per parameter (gsplat's convention) and the density
    control (:class:`~m3_memory.training.strategy.DensityControl`).

    ``decoders`` turn each model's slice of the rendered queries into its features: the
    memory banks (memory attention) here, a learned decoder in a distillation baseline."""

    def __init__(self, gaussians: Gaussians, banks: dict[str, MemoryBank], slices: dict[str, tuple[int, int]],
                 cfg: TrainConfig, extent: float, device: torch.device | str = "cpu", pose_views: Sequence[str] = (),
                 group: Group | None = None) -> None:
        """``pose_views``: names of the training views whose poses are refined
        (:mod:`~m3_memory.training.poses`; none: poses are kept as given). ``group``: this
        process's rank in a data-parallel launch (:mod:`~m3_memory.training.distributed`;
        None: one process)."""
        self.cfg, self.extent, self.slices = cfg, extent, slices
        self.group = group if group is not None else Group(device=torch.device(device))
        self.device = torch.device(device)  # parameters, optimiser state, banks and rendering live here
        # own copies: a learned projection must not leak into banks shared with other trainers
        self.banks = {k: replace(b, W=b.W.detach().clone().to(self.device), psc=b.psc.to(self.device))
                      for k, b in banks.items()}
        self.decoders: dict[str, Decoder] = dict(self.banks)
        n = len(gaussians)
        rest = (cfg.sh_degree + 1) ** 2 - 1
        sh_rest = torch.zeros(n, rest, 3)
        k = min(rest, gaussians.sh_rest.shape[1])
        sh_rest[:, :k] = gaussians.sh_rest[:, :k]
        tensors = {"means": gaussians.means, "quats": gaussians.quats, "log_scales": gaussians.log_scales,
                   "opacity_logits": gaussians.opacity_logits, "sh_dc": gaussians.sh_dc, "sh_rest": sh_rest,
                   "queries": gaussians.queries}
        self.params = {k: v.detach().float().to(self.device).clone().requires_grad_(True) for k, v in tensors.items()}
        # what no Gaussian covers (sky, far walls without depth) shows this learned colour and query
        self.background = torch.cat([torch.full((3,), 0.5), torch.zeros(gaussians.queries.shape[1])]).to(
            self.device).requires_grad_(True)
        lrs = {"means": cfg.lr_position * extent, "quats": cfg.lr_rotation, "log_scales": cfg.lr_scale,
               "opacity_logits": cfg.lr_opacity, "sh_dc": cfg.lr_color, "sh_rest": cfg.lr_color / 20,
               "queries": cfg.lr_query}
        self.optimizers = {k: _adam(self.params[k], lr, k) for k, lr in lrs.items()}
        self.optimizers["background"] = _adam(self.background, cfg.lr_background, "background")
        for name, bank in self.banks.items():
            if bank.learn_projection:
                bank.W = bank.W.float().requires_grad_(True)
                self.optimizers[f"W.{name}"] = _adam(bank.W, cfg.lr_projection, f"W.{name}")
        if len(set(pose_views)) != len(pose_views):
            raise ValueError("pose_views: view names must be unique")
        self.poses = PoseCorrections(pose_views, self.device) if pose_views else None
        if self.poses is not None:
            self.optimizers["poses"] = _adam(self.poses.xi, cfg.lr_pose, "poses")
        self.density = DensityControl(cfg, extent, self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0

    # -- rendering -------------------------------------------------------------------------
    def sh_degree_now(self) -> int:
        return min(self.cfg.sh_degree, self.iteration // max(self.cfg.sh_increase_every, 1))

    def render(self, view: View, depth: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
        """(rgb [H, W, 3], queries [H, W, L], expected depth [H, W] m or None, meta) at ``view``
        (at its refined pose when its pose is being refined)."""
        fix = self.poses.view_correction(view.name) if self.poses is not None and view.name in self.poses else None
        return self.render_camera(view.T_world_cam, view.K, *view.size, depth=depth, correction=fix)

    def pose(self, view: View) -> np.ndarray:
        """The pose of ``view`` the Gaussians agree with: T_world_cam [4, 4], refined if it is refined."""
        if self.poses is not None and view.name in self.poses:
            return self.poses.corrected(view.name, view.T_world_cam)
        return np.asarray(view.T_world_cam, dtype=np.float64)

    def render_camera(self, T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int, depth: bool = False,
                      correction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
        """:meth:`render` at any camera: T_world_cam [4, 4] (m), OpenCV K [3, 3] for ``width x height``;
        ``correction`` [4, 4] (differentiable) left-multiplies the world-to-camera matrix."""
        p = self.params
        viewmat = torch.from_numpy(invert_T(T_world_cam)).float().to(self.device)
        if correction is not None:
            viewmat = correction.float() @ viewmat
        centre = -(viewmat[:3, :3].T @ viewmat[:3, 3]).detach()  # camera centre in the world (m)
        viewmat = viewmat[None]  # [1, 4, 4]
        K = gsplat_K(torch.from_numpy(np.asarray(K)).float())[None].to(self.device)  # [1, 3, 3]
        rgb = sh_to_rgb(p["sh_dc"], p["sh_rest"], p["means"], centre, self.sh_degree_now())
        colors = torch.cat([rgb, p["queries"]], dim=1)  # [N, 3 + L]
        out, alpha, meta = rasterization(p["means"], torch.nn.functional.normalize(p["quats"], dim=-1),
                                         p["log_scales"].exp(), torch.sigmoid(p["opacity_logits"]), colors, viewmat, K,
                                         width, height, render_mode="RGB+ED" if depth else "RGB")
        out = out[0]
        d = out[..., -1] if depth else None
        bg = self.background
        rgb_out = out[..., :3] + (1 - alpha[0]) * bg[:3].clamp(0, 1)
        queries = out[..., 3:3 + p["queries"].shape[1]] + (1 - alpha[0]) * bg[3:]
        return rgb_out, queries, d, meta

    # -- one iteration ---------------------------------------------------------------------
    def step(self, batch: View | Sequence[View]) -> dict[str, float]:
        """One optimisation step on the global ``batch`` of views (one view: 3DGS's step); returns
        the loss terms averaged over the batch.

        The loss is the mean over the batch of each view's loss. In a launch of several ranks
        (``group``) each rank renders its slice of the batch and the gradients are summed over the
        ranks, which is the same gradient; density control sees every view's projected centres."""
        batch = [batch] if isinstance(batch, View) else list(batch)
        cfg, group = self.cfg, self.group
        if len(batch) % group.world:
            raise ValueError(f"a batch of {len(batch)} views does not split over {group.world} ranks")
        self.iteration += 1
        means_lr = _lr_schedule(cfg.lr_position * self.extent, cfg.lr_position_final * self.extent, self.iteration,
                                cfg.iterations)
        self.optimizers["means"].param_groups[0]["lr"] = means_lr
        share = len(batch) // group.world
        # the random pixels of every view of the batch, drawn in batch order on every rank
        pixels = [sample_pixels(v.size[1], v.size[0], cfg.feature_pixels, self.generator) for v in batch]
        mine = range(group.rank * share, (group.rank + 1) * share)
        names = ["rgb", "depth", *(f"cos.{n}" for n in self.decoders), "loss"]
        sums = [0.0] * (2 * len(names))  # per term: sum over views, number of views
        losses, metas = [], []
        for i in mine:
            view_loss, terms, meta = self._view_loss(batch[i], pixels[i])
            losses.append(view_loss / len(batch))
            metas.append(meta)
            for k, v in terms.items():
                sums[2 * names.index(k)] += v
                sums[2 * names.index(k) + 1] += 1
        if group.active:  # on the device: NCCL reduces only CUDA tensors
            sums = group.all_reduce(torch.tensor(sums, dtype=torch.float64, device=self.device), "the loss terms").tolist()
        terms = {k: sums[2 * j] / sums[2 * j + 1] for j, k in enumerate(names) if sums[2 * j + 1] > 0}
        if not math.isfinite(terms["loss"]):
            return terms
        for meta in metas:
            self.density.pre_backward(self.params, self.optimizers, self.iteration, meta)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        # one backward per view, accumulating in view order: the gradient is then summed exactly as
        # the ranks' all-reduce sums theirs (tensors shared by the views get each view's part
        # separately), so one process and N ranks take the same step to float32 rounding
        for k, view_loss in enumerate(losses):
            view_loss.backward(retain_graph=k < len(losses) - 1)
        self._reduce_gradients()
        for optimizer in self.optimizers.values():
            optimizer.step()
        info = self._density_info(metas, len(batch))
        before = {k: self.params[k] for k in PER_GAUSSIAN}
        if group.main:
            self.density.post_backward(self.params, self.optimizers, self.iteration, info, means_lr)
        changed = isinstance(self.density.strategy, MCMCStrategy) or any(self.params[k] is not t for k, t in before.items())
        if group.any(changed, "density control"):
            broadcast_gaussians(group, self.params, self.optimizers, PER_GAUSSIAN)
        if self.params["means"].shape[0] == 0:
            raise BuildFailed("training", f"every Gaussian was pruned at iteration {self.iteration} (opacity below "
                             f"{cfg.prune_opacity} or too large); check the poses and depth of the recording")
        return terms

    def _view_loss(self, view: View, uv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], dict]:
        """(loss of ``view``, its terms, the rasterizer's meta); ``uv`` [P, 2]: the feature pixels."""
        cfg = self.cfg
        use_depth = cfg.depth_weight > 0 and bool((view.depth > 0).any())
        rgb, queries, depth, meta = self.render(view, depth=use_depth)
        loss = rgb_loss(rgb, view.rgb.to(self.device), cfg.ssim_weight)
        terms = {"rgb": loss.item()}
        if use_depth:
            d_loss = depth_loss(depth, view.depth.to(self.device), cfg.depth_loss)
            loss = loss + cfg.depth_weight * d_loss
            terms["depth"] = d_loss.item()
        uv = uv.to(self.device)
        for name, decode in self.decoders.items():
            a, b = self.slices[name]
            f_loss, cos = feature_loss(queries[..., a:b], view.features[name].to(self.device), decode, uv)
            loss = loss + cfg.feature_weight * f_loss
            terms[f"cos.{name}"] = cos.item()
        terms["loss"] = loss.item()
        return loss, terms, meta

    def _reduce_gradients(self) -> None:
        """Sum every optimised tensor's gradient over the ranks (one all-reduce of one flat
        buffer); a gradient missing on every rank stays missing (Adam skips that tensor)."""
        if not self.group.active:
            return
        tensors = [p for o in self.optimizers.values() for g in o.param_groups for p in g["params"]]
        present = torch.tensor([p.grad is not None for p in tensors], dtype=torch.float32, device=self.device)
        flat = torch.cat([present] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                                      for p in tensors])
        self.group.all_reduce(flat, "the gradient all-reduce")
        at = len(tensors)
        for k, p in enumerate(tensors):
            n = p.numel()
            if flat[k] > 0:
                p.grad = flat[at:at + n].view_as(p).to(p.dtype).clone()
            at += n

    def _density_info(self, metas: list[dict], batch: int) -> dict:
        """gsplat's ``info`` of the whole batch for density control: the projected centres'
        gradients [B, N, 2] (normalised per view by its size, so ``width`` and ``height`` are 2)
        and radii [B, N, 2] of every view on every rank, in batch order."""
        if batch == 1 and not self.group.active:
            return metas[0]
        for meta in metas:
            if meta.get("gaussian_ids") is not None:
                raise ValueError("density control over a batch of views needs unpacked rendering")
        n = self.params["means"].shape[0]
        grads = []
        for meta in metas:
            g = means2d_grad(meta)
            grads.append(g if g is not None else torch.zeros(meta["radii"].shape[0], n, 2, device=self.device))
        grads = self.group.all_gather(torch.cat(grads).float(), "density statistics")  # [B, N, 2]
        radii = self.group.all_gather(torch.cat([m["radii"] for m in metas]).int(), "density statistics")
        holder = torch.zeros_like(grads, requires_grad=True)
        holder.grad = grads
        return {"means2d": holder, "radii": radii, "width": 2, "height": 2, "n_cameras": batch, "gaussian_ids": None}

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, views: list[View], refine_poses: bool = False) -> dict[str, float]:
        """Mean held-out PSNR (dB), per model cosine similarity and L2 distance between decoded
        and ground-truth features (at the ground-truth maps' resolution), and the expected
        depth's error against the sensor's valid depth (:func:`depth_errors`, metres).
        refine_poses: score each view at its pose refined with the Gaussians frozen
        (:meth:`refine_view`, ``cfg.pose_refine_eval_steps`` steps) when this trainer refines poses."""
        if not views:
            return {}
        if refine_poses and self.poses is not None and self.cfg.pose_refine_eval_steps > 0:
            views = [self.refine_view(v, self.cfg.pose_refine_eval_steps) for v in views]
        totals: dict[str, list[float]] = {"psnr": []}
        depths = []
        for view in views:
            rgb, queries, depth, _ = self.render(view, depth=True)
            depths.append(depth.cpu())
            totals["psnr"].append(psnr(rgb, view.rgb.to(self.device)))
            for name, decode in self.decoders.items():
                cos, l2 = feature_fidelity(queries[..., slice(*self.slices[name])], view.features[name].to(self.device),
                                           decode)
                totals.setdefault(f"cos.{name}", []).append(cos)
                totals.setdefault(f"l2.{name}", []).append(l2)
        return {**{k: float(np.mean(v)) for k, v in totals.items()},
                **depth_errors(depths, [v.depth for v in views])}

    def refine_view(self, view: View, steps: int) -> View:
        """A copy of ``view`` at its pose refined with the Gaussians frozen: ``steps`` Adam steps
        (``cfg.lr_pose``) of one SE(3) correction on the colour loss (and the depth loss where the
        view has depth and it is on). The held-out protocol of :mod:`~m3_memory.training.poses`."""
        cfg = self.cfg
        fix = PoseCorrections([view.name], self.device)
        optimizer = torch.optim.Adam([fix.xi], lr=cfg.lr_pose)
        use_depth = cfg.depth_weight > 0 and bool((view.depth > 0).any())
        rgb_gt, depth_gt = view.rgb.to(self.device), view.depth.to(self.device)
        with torch.enable_grad():
            for _ in range(steps):
                rgb, _, depth, _ = self.render_camera(view.T_world_cam, view.K, *view.size, depth=use_depth,
                                                      correction=fix.view_correction(view.name))
                loss = rgb_loss(rgb, rgb_gt, cfg.ssim_weight)
                if use_depth:
                    loss = loss + cfg.depth_weight * depth_loss(depth, depth_gt, cfg.depth_loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for t in (*self.params.values(), self.background):
            t.grad = None  # the frozen Gaussians' gradients of these steps are not for the next step
        return replace(view, T_world_cam=fix.corrected(view.name, view.T_world_cam))

    def gaussians(self) -> Gaussians:
        """The current Gaussians (detached copies on the CPU)."""
        p = {k: v.detach().cpu().clone() for k, v in self.params.items()}
        return Gaussians(p["means"], torch.nn.functional.normalize(p["quats"], dim=-1), p["log_scales"],
                         p["opacity_logits"], p["sh_dc"], p["sh_rest"], p["queries"])

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "params": {k: v.detach() for k, v in self.params.items()},
                "background": self.background.detach(),
                "W": {k: b.W.detach() for k, b in self.banks.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "density": self.density.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "poses": None if self.poses is None else self.poses.xi.detach()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (parameters, Adam moments, statistics, random state).
        Optimisers named ``decoder.*`` hold modules' own parameters, restored in place by their owner."""
        self.iteration = int(state["iteration"])
        for name, optimizer in self.optimizers.items():
            group = optimizer.param_groups[0]
            if name.startswith("decoder."):
                continue
            if name == "background":
                src = state["background"]
            elif name == "poses":
                src = state["poses"]
            else:
                src = state["W"][name[2:]] if name.startswith("W.") else state["params"][name]
            new = src.detach().clone().float().to(self.device).requires_grad_(True)
            group["params"][0] = new
            if name == "background":
                self.background = new
            elif name == "poses":
                self.poses.xi = new
            elif name.startswith("W."):
                self.banks[name[2:]].W = new
            else:
                self.params[name] = new
        for name, W in state["W"].items():
            if not self.banks[name].learn_projection:
                self.banks[name].W = W.clone().to(self.device)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.density.load_state_dict(state["density"], self.device)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


@torch.no_grad()
def feature_fidelity(query_map: torch.Tensor, target: torch.Tensor, decode: Decoder) -> tuple[float, float]:
    """Mean cosine similarity and mean L2 distance between features ``decode`` makes of ``query_map``
    [H, W, l] (sampled at the centres of ``target``'s pixels) and ``target`` [h, w, d];
    all-zero (unlabeled) target pixels are skipped."""
    h, w = target.shape[:2]
    height, width = query_map.shape[:2]
    uv = map_pixel_centres(h, w, width, height)
    q = lookup(query_map, uv, width, height)  # [h*w, l]
    gt = target.reshape(-1, target.shape[-1]).float()
    keep = gt.abs().sum(-1) > 0  # exact pixel values here, no interpolation
    pred = decode(q[keep])
    cos = torch.nn.functional.cosine_similarity(pred, gt[keep], dim=-1).mean()
    return float(cos), float((pred - gt[keep]).norm(dim=-1).mean())

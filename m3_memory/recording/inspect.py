"""Summaries of a recording (`m3 inspect`): counts, resolution, depth, poses, a contact sheet, and
warnings about implausible depth and intrinsics (:mod:`m3_memory.recording.plausibility`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from m3_memory.errors import InputError
from m3_memory.outputs import write_atomic
from m3_memory.progress import progress
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.plausibility import PlausibilityTally

THUMB_WIDTH = 240
MASK_COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]])


@dataclass
class Summary:
    """What `m3 inspect` reports. Depth in metres, times in seconds."""

    path: str
    format: str
    frames: int = 0
    resolution: tuple[int, int] | None = None  # (width, height)
    fx_fy_cx_cy: tuple[float, float, float, float] | None = None
    depth_valid_fraction: float = 0.0
    depth_median_m: float | None = None
    depth_p05_p95_m: tuple[float, float] | None = None
    frames_with_pose: int = 0
    trajectory_length_m: float = 0.0
    duration_s: float = 0.0
    objects: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    robot_pose: str | None = None  # where the robot's base stood at the last frame, when the recording says
    warnings: list[str] = field(default_factory=list)  # implausible depth or intrinsics, one line per kind

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"{self.path} ({self.format})", f"  frames: {self.frames}"]
        if self.resolution:
            out.append(f"  resolution: {self.resolution[0]} x {self.resolution[1]}  "
                       f"K: fx {self.fx_fy_cx_cy[0]:.2f} fy {self.fx_fy_cx_cy[1]:.2f} "
                       f"cx {self.fx_fy_cx_cy[2]:.2f} cy {self.fx_fy_cx_cy[3]:.2f}")
        if self.depth_median_m is not None:
            out.append(f"  depth: {100 * self.depth_valid_fraction:.1f}% valid, median {self.depth_median_m:.3f} m, "
                       f"5-95% {self.depth_p05_p95_m[0]:.3f}-{self.depth_p05_p95_m[1]:.3f} m")
        elif self.frames:
            out.append("  depth: no valid pixel in any frame")
        out.append(f"  poses: {self.frames_with_pose}/{self.frames} frames"
                   + (f", path length {self.trajectory_length_m:.2f} m" if self.frames_with_pose > 1 else ""))
        out.append(f"  duration: {self.duration_s:.2f} s")
        if self.objects:
            out.append(f"  objects: {', '.join(self.objects)}")
        if self.robot_pose:
            out.append(f"  robot pose: {self.robot_pose}")
        for reason, n in self.dropped.items():
            out.append(f"  dropped {n} frame(s): {reason}")
        return out


class _Sampler:
    """Keeps an evenly spaced subset of thumbnails from a stream of unknown length."""

    def __init__(self, keep: int):
        self.keep, self.stride, self.items = keep, 1, []

    def offer(self, index: int, make):
        if index % self.stride:
            return
        self.items.append((index, make()))
        if len(self.items) >= 2 * self.keep:
            self.stride *= 2
            self.items = [it for it in self.items if it[0] % self.stride == 0]

    def chosen(self) -> list:
        if len(self.items) <= self.keep:
            return [it[1] for it in self.items]
        idx = np.linspace(0, len(self.items) - 1, self.keep).round().astype(int)
        return [self.items[i][1] for i in idx]


def _thumbs(frame: Frame, objects: list[str]) -> list[np.ndarray]:
    """Colour, colour-mapped depth and (if any) mask overlay, each uint8 [h, THUMB_WIDTH, 3]."""
    h, w = frame.size
    size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
    rgb = np.asarray(Image.fromarray(frame.rgb).resize(size, Image.BILINEAR))
    d = frame.depth
    valid = d > 0
    lo, hi = (np.percentile(d[valid], [2, 98]) if valid.any() else (0.0, 1.0))
    norm = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    depth_rgb = (colormaps["turbo"](norm)[:, :, :3] * 255).astype(np.uint8)
    depth_rgb[~valid] = 0
    out = [rgb, np.asarray(Image.fromarray(depth_rgb).resize(size, Image.NEAREST))]
    if objects:
        over = frame.rgb.astype(np.float32)
        for i, name in enumerate(objects):
            m = frame.masks.get(name)
            if m is not None:
                over[m] = 0.45 * over[m] + 0.55 * MASK_COLORS[i % len(MASK_COLORS)]
        out.append(np.asarray(Image.fromarray(over.astype(np.uint8)).resize(size, Image.BILINEAR)))
    return out


def contact_sheet(rows: list[list[np.ndarray]], titles: list[str], path: Path,
                  legend: list[tuple[str, tuple[int, int, int]]]) -> None:
    """Grid of thumbnails -> PNG (written beside ``path`` and renamed into place).
    legend: (text, RGB colour) items written in a line above the grid."""
    pad, head = 4, 16
    th, tw = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    sheet = Image.new("RGB", (ncol * (tw + pad) + pad, len(rows) * (th + head + pad) + pad + head), "white")
    draw = ImageDraw.Draw(sheet)
    x = pad
    for text, color in legend:
        draw.text((x, 2), text, fill=tuple(color))
        x += int(draw.textlength(text)) + 12
    for r, (row, title) in enumerate(zip(rows, titles)):
        y = head + pad + r * (th + head + pad)
        draw.text((pad, y), title, fill="black")
        for c, img in enumerate(row):
            sheet.paste(Image.fromarray(img), (pad + c * (tw + pad), y + head))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"))


def inspect_recording(rec: Recording, sheet: str | Path | None = None, sheet_frames: int = 6,
                      show_progress: bool = True) -> Summary:
    """Stream the recording once; summarise it and optionally write a contact-sheet PNG."""
    s = Summary(path=str(rec.path), format=rec.format_name, objects=list(rec.objects))
    tally = PlausibilityTally()
    sampler = _Sampler(sheet_frames)
    valid_sum, n_pixels = 0, 0
    depth_samples = []
    first_stamp = last_stamp = None
    prev_t = None
    for i, f in enumerate(progress(rec, f"inspect {rec.path.name}", unit="frame", show=show_progress, leave=False)):
        if s.resolution is None:
            s.resolution = (f.size[1], f.size[0])
            s.fx_fy_cx_cy = tuple(float(x) for x in (f.K[0, 0], f.K[1, 1], f.K[0, 2], f.K[1, 2]))
        tally.add(f)
        valid = f.depth > 0
        valid_sum += int(valid.sum())
        n_pixels += valid.size
        depth_samples.append(f.depth[valid][:: max(1, valid.sum() // 2000)])
        first_stamp = f.stamp if first_stamp is None else first_stamp
        last_stamp = f.stamp
        if f.T_world_cam is not None:
            s.frames_with_pose += 1
            t = f.T_world_cam[:3, 3]
            if prev_t is not None:
                s.trajectory_length_m += float(np.linalg.norm(t - prev_t))
            prev_t = t
        if sheet is not None:
            sampler.offer(i, lambda f=f, i=i: (f"{f.name or f'frame {i}'}  t={f.stamp:.3f} s", _thumbs(f, s.objects)))
        s.frames += 1
    s.dropped = dict(rec.stats.dropped)
    s.warnings = tally.lines()
    if n_pixels:
        s.depth_valid_fraction = valid_sum / n_pixels
        d = np.concatenate(depth_samples)
        if d.size:
            s.depth_median_m = float(np.median(d))
            s.depth_p05_p95_m = tuple(float(x) for x in np.percentile(d, [5, 95]))
    if first_stamp is not None:
        s.duration_s = float(last_stamp - first_stamp)
        try:
            pose = rec.robot_pose(last_stamp)
            s.robot_pose = pose.describe() if pose is not None else None
        except InputError as err:
            s.robot_pose = f"unknown ({err.problem})"
    chosen = sampler.chosen()
    if sheet is not None and chosen:
        black = (0, 0, 0)
        legend = [("colour |", black), ("depth (turbo, black = invalid) |", black)]
        if s.objects:
            legend += [("masks:", black)] + [(name, tuple(int(c) for c in MASK_COLORS[i % len(MASK_COLORS)]))
                                             for i, name in enumerate(s.objects)]
        contact_sheet([c[1] for c in chosen], [c[0] for c in chosen], Path(sheet), legend)
    return s

"""The memory artifact: a ``*.m3`` directory.

- ``gaussians.ply``: the standard 3DGS PLY (x y z, nx ny nz, f_dc_*, f_rest_*, opacity,
  scale_*, rot_*) plus one ``q_<i>`` property per principal-query dimension, so ordinary
  splat viewers open it.
- ``memory.safetensors``: per model ``<name>.psc`` ``[t, d]`` and ``<name>.W`` ``[l, d]``, and
  ``<name>.sources`` ``[t, 6]`` where each component came from (the attention trace,
  :mod:`m3_memory.memory.trace`; absent in memories written before it).
- ``meta.json``: format version, models (name, feature dim, query slice, PSC threshold,
  temperature, whether W was learned, checkpoint identity), scene frame, source
  recording, the cameras of the source views (intrinsics, size, pose, train/test split),
  where the robot stands (``robot_pose``: its base frame's pose in the scene frame and
  where that came from; absent or null when unknown), ``trace`` (version and layout of the
  sources tensors; absent when not recorded), training config, and SHA-256
  checksums of the two data files.
- anything else the writer adds (``extra``), e.g. the build's ``report/`` PNGs.

Written into a temporary directory beside the target and renamed into place, so a crash
never leaves a half-written memory. Loading checks version, files and checksums.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from m3_memory.conventions import WORLD_FRAME
from m3_memory.errors import InputError, missing_reason
from m3_memory.memory.attention import MemoryBank
from m3_memory.memory.trace import ComponentSources, read_trace, trace_meta
from m3_memory.outputs import Staged
from m3_memory.robot_pose import RobotPose

FORMAT = "m3-memory"
FORMAT_VERSION = 1
PLY, TENSORS, META = "gaussians.ply", "memory.safetensors", "meta.json"


@dataclass
class Gaussians:
    """3D Gaussians in the memory's world frame (metres), 3DGS parameterisation.

    means [N, 3]; quats [N, 4] wxyz (normalised on use); log_scales [N, 3] (log metres);
    opacity_logits [N]; sh_dc [N, 3] and sh_rest [N, K, 3] spherical-harmonic colour
    coefficients (K = 0 for view-independent colour); queries [N, L] principal queries of
    all models, concatenated (each model owns a slice, see ``ModelEntry.query_slice``).
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh_dc: torch.Tensor
    sh_rest: torch.Tensor
    queries: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,),
                    "sh_dc": (n, 3)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise InputError("gaussians", f"{name} has shape {list(getattr(self, name).shape)}, expected {list(shape)}")
        if self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3:
            raise InputError("gaussians", f"sh_rest must be [N, K, 3], got {list(self.sh_rest.shape)}")
        if self.queries.ndim != 2 or self.queries.shape[0] != n:
            raise InputError("gaussians", f"queries must be [N, L], got {list(self.queries.shape)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    def subset(self, index: torch.Tensor | np.ndarray) -> "Gaussians":
        """The Gaussians at ``index`` (indices [n] or a bool mask [N])."""
        index = torch.as_tensor(index)
        return Gaussians(*(getattr(self, f.name)[index] for f in fields(self)))

    def parameter_count(self) -> int:
        """Numbers stored per Gaussian, times N."""
        return sum(getattr(self, f.name).numel() for f in fields(self))


@dataclass
class ModelEntry:
    """How one foundation model is stored in the memory."""

    name: str
    feature_dim: int
    query_slice: tuple[int, int]  # [start, stop) into Gaussians.queries
    threshold: float  # PSC similarity threshold used to build the bank
    temperature: float
    learn_projection: bool
    checkpoint: str = ""  # identity of the weights (file name, hub tag, hash)


@dataclass
class CameraView:
    """One source view the memory was built from: OpenCV intrinsics ``K [3, 3]`` (pixels, at
    ``width x height``), ``T_world_cam [4, 4]`` (memory frame <- OpenCV camera, metres), and
    whether training used it (``split`` "train") or held it out ("test")."""

    name: str
    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray
    split: str = "train"

    def to_json(self) -> dict:
        return {"name": self.name, "K": np.asarray(self.K, float).tolist(), "width": int(self.width),
                "height": int(self.height), "T_world_cam": np.asarray(self.T_world_cam, float).tolist(), "split": self.split}

    @classmethod
    def from_json(cls, d: dict) -> "CameraView":
        return cls(d["name"], np.array(d["K"], dtype=np.float64), int(d["width"]), int(d["height"]),
                   np.array(d["T_world_cam"], dtype=np.float64), d.get("split", "train"))


@dataclass
class Memory:
    """A loaded memory: the Gaussians, one bank per model, and the metadata.

    robot_pose: where the robot's base stands in the scene frame, None when the memory does
    not record it (older memories, recordings without it and no ``--robot-pose``).
    sources: per model, where each principal scene component came from (the attention trace);
    empty when the memory does not record it (memories written before the trace).
    """

    gaussians: Gaussians
    banks: dict[str, MemoryBank]
    models: list[ModelEntry]
    scene_frame: str = WORLD_FRAME
    source: str = ""
    training: dict = field(default_factory=dict)
    cameras: list[CameraView] = field(default_factory=list)
    robot_pose: RobotPose | None = None
    sources: dict[str, ComponentSources] = field(default_factory=dict)
    _copies: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def on(self, device: torch.device | str) -> "Memory":
        """This memory with its Gaussians and banks on ``device``: itself when they are there
        already (the CPU, as loaded), else a copy made on first use and kept (queries render and attend there; the 3D geometry of a
        query result stays on the CPU)."""
        device = torch.device(device)
        if self.gaussians.means.device == device:
            return self
        if str(device) not in self._copies:
            g = Gaussians(*(getattr(self.gaussians, f.name).to(device) for f in fields(self.gaussians)))
            banks = {k: replace(b, psc=b.psc.to(device), W=b.W.to(device)) for k, b in self.banks.items()}
            self._copies[str(device)] = replace(self, gaussians=g, banks=banks)
        return self._copies[str(device)]

    def queries_of(self, model: str) -> torch.Tensor:
        """The principal queries ``[N, l]`` of one model."""
        entry = next((m for m in self.models if m.name == model), None)
        if entry is None:
            raise InputError(model, f"not in this memory (models: {', '.join(m.name for m in self.models)})")
        a, b = entry.query_slice
        return self.gaussians.queries[:, a:b]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ply_columns(g: Gaussians) -> list[tuple[str, np.ndarray]]:
    n = len(g)
    cols = [("x", g.means[:, 0]), ("y", g.means[:, 1]), ("z", g.means[:, 2])]
    cols += [(k, torch.zeros(n)) for k in ("nx", "ny", "nz")]
    cols += [(f"f_dc_{i}", g.sh_dc[:, i]) for i in range(3)]
    rest = g.sh_rest.transpose(1, 2).reshape(n, -1)  # 3DGS order: channel-major, [N, 3 * K]
    cols += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    cols += [("opacity", g.opacity_logits)]
    cols += [(f"scale_{i}", g.log_scales[:, i]) for i in range(3)]
    cols += [(f"rot_{i}", g.quats[:, i]) for i in range(4)]
    cols += [(f"q_{i}", g.queries[:, i]) for i in range(g.queries.shape[1])]
    return [(name, c.detach().cpu().numpy().astype(np.float32)) for name, c in cols]


def write_ply(path: Path, g: Gaussians) -> None:
    """Gaussians -> binary little-endian 3DGS PLY with ``q_<i>`` query properties."""
    from plyfile import PlyData, PlyElement

    cols = _ply_columns(g)
    data = np.empty(len(g), dtype=[(name, "<f4") for name, _ in cols])
    for name, c in cols:
        data[name] = c
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


def read_ply(path: Path) -> Gaussians:
    """A 3DGS PLY (with optional ``q_<i>`` properties) -> Gaussians."""
    from plyfile import PlyData

    try:
        v = PlyData.read(str(path))["vertex"].data
    except Exception as err:  # plyfile raises several types for damaged files
        raise InputError(path, f"cannot read the PLY ({type(err).__name__}: {err})") from None
    names = v.dtype.names

    def stack(prefix: str) -> torch.Tensor:
        keys = sorted((k for k in names if k.startswith(prefix) and k[len(prefix):].isdigit()),
                      key=lambda k: int(k[len(prefix):]))
        return torch.from_numpy(np.stack([v[k] for k in keys], axis=1).astype(np.float32)) if keys \
            else torch.zeros(len(v), 0)

    missing = [k for k in ("x", "y", "z", "opacity", "f_dc_0", "scale_0", "rot_0") if k not in names]
    if missing:
        raise InputError(path, f"not a 3DGS PLY: missing properties {', '.join(missing)}")
    rest = stack("f_rest_")
    k = rest.shape[1] // 3
    return Gaussians(means=torch.from_numpy(np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)),
                     quats=stack("rot_"), log_scales=stack("scale_"),
                     opacity_logits=torch.from_numpy(np.asarray(v["opacity"], dtype=np.float32)),
                     sh_dc=stack("f_dc_"), sh_rest=rest.reshape(len(v), 3, k).transpose(1, 2).contiguous(),
                     queries=stack("q_"))


def save_memory(path: str | Path, memory: Memory, extra: Callable[[Path], None] | None = None,
                replace: bool = True) -> Path:
    """Write ``memory`` as a ``*.m3`` directory (atomically: temp dir, then rename).

    ``extra(dir)`` may add more files (reports, pictures) to the directory before it is
    renamed into place, so they appear together with the memory or not at all.
    replace: an existing ``path`` is replaced; False: :class:`FileExistsError` instead (also
    when it appears while writing), and nothing is left behind.
    """
    from safetensors.torch import save_file

    path = Path(path)
    L = memory.gaussians.queries.shape[1]
    for m in memory.models:
        a, b = m.query_slice
        bank = memory.banks.get(m.name)
        if bank is None or not (0 <= a < b <= L) or bank.query_dim != b - a or bank.feature_dim != m.feature_dim:
            raise InputError(m.name, f"model entry (slice {m.query_slice}, dim {m.feature_dim}) does not match its bank "
                             f"and the {L} query channels")
    for name, sources in memory.sources.items():
        if name not in memory.banks or len(sources) != memory.banks[name].psc.shape[0]:
            raise InputError(name, f"trace of {len(sources)} components does not match the memory bank")
    path.parent.mkdir(parents=True, exist_ok=True)
    with Staged(path, replace=replace) as tmp:
        tmp.mkdir()
        write_ply(tmp / PLY, memory.gaussians)
        tensors = {}
        for name, bank in memory.banks.items():
            tensors[f"{name}.psc"] = bank.psc.detach().cpu().contiguous()
            tensors[f"{name}.W"] = bank.W.detach().cpu().contiguous()
        for name, sources in memory.sources.items():
            tensors[f"{name}.sources"] = sources.table.contiguous()
        save_file(tensors, str(tmp / TENSORS))
        meta = {"format": FORMAT, "version": FORMAT_VERSION,
                "models": [{"name": m.name, "feature_dim": m.feature_dim, "query_slice": list(m.query_slice),
                            "threshold": m.threshold, "temperature": m.temperature,
                            "learn_projection": m.learn_projection, "checkpoint": m.checkpoint} for m in memory.models],
                "num_gaussians": len(memory.gaussians), "scene_frame": memory.scene_frame, "source": memory.source,
                "training": memory.training, "cameras": [c.to_json() for c in memory.cameras],
                "robot_pose": memory.robot_pose.to_json() if memory.robot_pose is not None else None,
                **({"trace": trace_meta()} if memory.sources else {}),
                "checksums": {PLY: _sha256(tmp / PLY), TENSORS: _sha256(tmp / TENSORS)}}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if extra is not None:
            extra(tmp)
    return path


def load_memory(path: str | Path) -> Memory:
    """Read a ``*.m3`` directory, checking format, version, files and checksums."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise InputError(path, missing_reason(path) if not path.exists() else "is not a *.m3 memory directory")
    for name in (META, PLY, TENSORS):
        if not (path / name).is_file():
            raise InputError(path, f"memory is incomplete: {name} is missing")
    try:
        meta = json.loads((path / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path / META, f"corrupt JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise InputError(path / META, f"not an m3 memory (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise InputError(path, f"written by a newer m3 (format version {meta['version']} > {FORMAT_VERSION}); "
                         "upgrade m3 to read it")
    for name, digest in meta.get("checksums", {}).items():
        if _sha256(path / name) != digest:
            raise InputError(path / name, "checksum mismatch: the file was modified or damaged after writing")
    gaussians = read_ply(path / PLY)
    tensors = load_file(str(path / TENSORS))
    models, banks = [], {}
    for m in meta["models"]:
        entry = ModelEntry(m["name"], int(m["feature_dim"]), tuple(m["query_slice"]), float(m["threshold"]),
                           float(m["temperature"]), bool(m["learn_projection"]), m.get("checkpoint", ""))
        for key in (f"{entry.name}.psc", f"{entry.name}.W"):
            if key not in tensors:
                raise InputError(path / TENSORS, f"tensor {key} is missing")
        banks[entry.name] = MemoryBank(entry.name, tensors[f"{entry.name}.psc"], tensors[f"{entry.name}.W"],
                                       entry.temperature, entry.learn_projection)
        models.append(entry)
    try:
        cameras = [CameraView.from_json(c) for c in meta.get("cameras", [])]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path / META, f"corrupt camera list ({err})") from None
    return Memory(gaussians, banks, models, meta.get("scene_frame", WORLD_FRAME), meta.get("source", ""),
                  meta.get("training", {}), cameras, _robot_pose(path / META, meta.get("robot_pose")),
                  read_trace(path / META, meta.get("trace"), tensors, {n: b.psc.shape[0] for n, b in banks.items()}))


def _robot_pose(where: Path, d: dict | None) -> RobotPose | None:
    """meta.json's ``robot_pose`` (None when absent), or one-line :class:`InputError` naming ``where``."""
    if d is None:
        return None
    try:
        return RobotPose.from_json(d)
    except InputError as err:
        raise InputError(where, f"corrupt robot_pose: {err.problem}") from None
    except (KeyError, TypeError) as err:
        raise InputError(where, f"corrupt robot_pose ({type(err).__name__}: {err})") from None

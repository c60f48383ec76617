"""The training configuration on the command line: a preset that follows the device, a YAML
file, and one ``--train.<field>`` option per :class:`TrainConfig` field (the way nerfstudio's
and gsplat's trainers expose theirs).

Precedence: preset < ``--config file.yaml`` < ``--train.*`` options. The ``auto`` preset is
the authors' schedule on CUDA and the fast one on the CPU, so nobody gets a 30k-iteration CPU
build without asking for it.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from m3_memory.errors import InputError
from m3_memory.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

PRESETS = ("auto", "fast", "authors")
PREFIX = "train."


def _field_types() -> dict[str, tuple[type, bool]]:
    """field name -> (scalar type, whether None is allowed)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
        scalar = next((a for a in args if a is not type(None)), hint)
        out[f.name] = (scalar, type(None) in args)
    return out


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(scalar: type, optional: bool):
    base = _parse_bool if scalar is bool else scalar

    def convert(text: str):
        if optional and text.strip().lower() in ("none", "null", ""):
            return None
        return base(text)

    convert.__name__ = scalar.__name__  # argparse names the type in its error message
    return convert


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config`` and ``--train.<field>`` for every :class:`TrainConfig` field."""
    parser.add_argument("--preset", choices=PRESETS, default="auto",
                        help="training schedule: fast (CPU: 600 iterations at 320 px), authors (30k iterations at full "
                        "resolution, as the authors' released M3 code), auto (authors on CUDA, fast on the CPU; the default)")
    parser.add_argument("--config", metavar="FILE.yaml", help="training options as YAML (field: value), over the preset")
    group = parser.add_argument_group("training options (over the preset and --config)")
    defaults = TrainConfig()
    for name, (scalar, optional) in _field_types().items():
        group.add_argument(f"--{PREFIX}{name.replace('_', '-')}", dest=f"{PREFIX}{name}", metavar=scalar.__name__.upper(),
                           type=_converter(scalar, optional), default=argparse.SUPPRESS,
                           help=f"authors' default {getattr(defaults, name)!r}")


def _read_yaml(path: str) -> dict:
    import yaml

    if not Path(path).is_file():
        raise InputError(path, "training config file does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise InputError(path, f"is not valid YAML ({' '.join(str(err).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "must hold a mapping of training options (field: value)")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(path, f"unknown training options {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data


def preset_config(preset: str, device: torch.device) -> TrainConfig:
    """The preset's :class:`TrainConfig`: ``auto`` is ``authors`` on CUDA, ``fast`` elsewhere."""
    if preset not in PRESETS:
        raise InputError("--preset", f"unknown preset {preset!r}; use {', '.join(PRESETS)}")
    if preset == "auto":
        preset = "authors" if device.type == "cuda" else "fast"
    return TrainConfig() if preset == "authors" else TrainConfig.fast()


def train_config(args: argparse.Namespace, device: torch.device) -> TrainConfig:
    """The config that :func:`add_train_options`' options name, for ``device``."""
    cfg = preset_config(args.preset, device)
    changes = _read_yaml(args.config) if args.config else {}
    changes.update({name: getattr(args, f"{PREFIX}{name}") for name in _field_types() if hasattr(args, f"{PREFIX}{name}")})
    try:
        return cfg.with_(**changes)
    except TypeError as err:  # a YAML value of the wrong kind
        raise InputError("training options", " ".join(str(err).split())) from None


"""Training options on the command line: presets by device, --config YAML, --train.<field>."""

import argparse
from dataclasses import fields

import pytest
import torch

from m3_memory.cli import main
from m3_memory.errors import InputError
from m3_memory.training.config import TrainConfig
from m3_memory.training.options import add_train_options, preset_config, train_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def parse(*argv):
    p = argparse.ArgumentParser()
    add_train_options(p)
    return p.parse_args(list(argv))


def test_presets_follow_the_device():
    assert preset_config("auto", CPU) == TrainConfig.fast()
    assert preset_config("auto", CUDA) == TrainConfig()  # the authors' schedule (REFERENCE.md)
    assert preset_config("authors", CPU).iterations == 30_000
    assert preset_config("fast", CUDA) == TrainConfig.fast()
    assert train_config(parse(), CPU) == TrainConfig.fast()


def test_every_field_is_an_option():
    p = argparse.ArgumentParser()
    add_train_options(p)
    flags = {a for action in p._actions for a in action.option_strings}
    for f in fields(TrainConfig):
        assert f"--train.{f.name.replace('_', '-')}" in flags


def test_options_override_config_file_over_preset(tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("iterations: 77\nmax-gaussians: 1234\nlearn_projection: true\n")
    cfg = train_config(parse("--config", str(yaml_file), "--train.iterations", "99", "--train.max-side", "none",
                             "--train.psc-rule", "cover", "--train.lr-query", "1e-3"), CPU)
    assert (cfg.iterations, cfg.max_gaussians, cfg.learn_projection, cfg.max_side) == (99, 1234, True, None)
    assert cfg.psc_rule == "cover" and cfg.lr_query == 1e-3
    assert cfg.sh_degree == TrainConfig.fast().sh_degree  # the rest from the CPU preset
    assert train_config(parse("--train.learn-projection", "no"), CPU).learn_projection is False


def test_bad_options_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 5\nwarp_speed: 9\n")
    with pytest.raises(InputError, match="unknown training options warp_speed"):
        train_config(parse("--config", str(bad)), CPU)
    with pytest.raises(InputError, match="does not exist"):
        train_config(parse("--config", str(tmp_path / "none.yaml")), CPU)
    with pytest.raises(InputError, match="training option iterations: invalid value 0"):
        train_config(parse("--train.iterations", "0"), CPU)
    bad.write_text("- a list\n")
    with pytest.raises(InputError, match="mapping"):
        train_config(parse("--config", str(bad)), CPU)
    with pytest.raises(SystemExit) as stop:
        parse("--train.iterations", "many")
    assert stop.value.code == 2 and "invalid int value: 'many'" in capsys.readouterr().err


def test_authors_schedule_on_the_cpu_says_so_first(tmp_path, capsys):
    code = main(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "x.m3"), "--device", "cpu",
                 "--preset", "authors"])
    err = capsys.readouterr().err
    assert code == 2 and err.index("authors' schedule on the CPU: 30000 iterations at full px take hours") < \
        err.index("m3: error:")
    code = main(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "x.m3"), "--device", "cpu",
                 "--iterations", "5000"])  # asked for by count, not by preset: only the error line
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1

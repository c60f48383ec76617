"""The one --device setting: resolution, messages, and the commands that take it."""

import logging

import pytest
import torch

from m3_memory.cli import main
from m3_memory.device import describe_device, out_of_memory_hint, resolve_device, use_device, warn_cpu_fallback
from m3_memory.errors import InputError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert describe_device(torch.device("cpu")).startswith("cpu (")


def test_auto_on_the_cpu_warns_once_when_the_work_starts_and_an_explicit_cpu_never(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="m3"):
        assert resolve_device("cpu") == torch.device("cpu")
        warn_cpu_fallback()
        assert not caplog.records
        assert resolve_device("auto") == torch.device("cpu")
        assert not caplog.records  # resolving says nothing: a bad input read next still ends with one line
        warn_cpu_fallback()
        assert resolve_device(None) == torch.device("cpu")
        warn_cpu_fallback()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("no CUDA device is available") and "--device auto computes on the CPU" in warnings[0]


@pytest.mark.parametrize("command", [["features", "REC", "--model", "clip-fixture", "--out", "f"],
                                     ["query", "MEM", "yellow bath duck", "--out", "q"]])
@pytest.mark.parametrize("spec", ["auto", "cpu"])
def test_commands_warn_about_the_cpu_only_when_auto_chose_it(command, spec, synth, built_memory, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [str(synth.folder) if a == "REC" else str(built_memory[0]) if a == "MEM" else a for a in command]
    argv = [str(tmp_path / a) if a in ("f", "q") else a for a in argv]
    assert main([*argv, "--device", spec]) == 0
    err = capsys.readouterr().err
    assert err.count("--device auto computes on the CPU") == (spec == "auto"), err


@pytest.mark.parametrize("spec", ["tpu", "cpu:1", "cuda:x", "gpu", ""])
def test_unknown_device_is_one_line(spec):
    with pytest.raises(InputError, match="unknown device; use auto") as err:
        resolve_device(spec)
    assert "\n" not in str(err.value)


@needs_no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_names_the_device_and_what_is_available(spec):
    with pytest.raises(InputError, match=rf"device {spec}: CUDA is not available here .*available: cpu;"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_missing_cuda_index_names_what_is_available():
    n = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(InputError, match=f"device cuda:{n}: no such CUDA device; available: cpu, cuda:0"):
        resolve_device(f"cuda:{n}")


@needs_no_cuda
@pytest.mark.parametrize("command", [["build", "rec", "--out", "x.m3"], ["features", "rec", "--model", "clip-fixture"],
                                     ["query", "mem.m3", "duck"], ["eval", "mem.m3"], ["grasp", "mem.m3", "duck"],
                                     ["demo"]])
def test_every_command_refuses_missing_cuda_with_exit_2(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([*command, "--device", "cuda:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("m3: error: device cuda:1: CUDA is not available")
    assert not any(tmp_path.iterdir())  # nothing written


def test_use_device_logs_which_device(caplog):
    with caplog.at_level(logging.INFO, logger="m3"):
        assert use_device("cpu", "query") == torch.device("cpu")
    assert "query: device cpu (" in caplog.text


def test_out_of_memory_names_the_settings_to_lower():
    with pytest.raises(InputError, match="out of GPU memory; lower --train.max-side or --train.max-gaussians, or use "
                                         "--device cpu"):
        with out_of_memory_hint(torch.device("cpu"), "--train.max-side or --train.max-gaussians"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(ValueError, match="other"):  # anything else passes through
        with out_of_memory_hint(torch.device("cpu"), "x"):
            raise ValueError("other")

"""The one --device setting: resolution, messages, and the commands that take it."""

import logging

import pytest
import torch

from m3_memory.cli import main
from m3_memory.device import describe_device, out_of_memory_hint, resolve_device, use_device
from m3_memory.errors import InputError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert describe_device(torch.device("cpu")).startswith("cpu (")


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

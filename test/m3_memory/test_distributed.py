"""Feature extraction split over ranks under torch.distributed (two gloo processes on the CPU,
loopback): the shared cache and the kept principal scene components equal a one-process run,
and a rank lost during the extraction stops the others with one line (RankLost)."""

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from m3_memory import distributed
from m3_memory.foundation import load_model
from m3_memory.foundation.cache import cache_folder, shared_features
from m3_memory.memory.components import default_threshold, scene_components, usable_frames
from m3_memory.recording import open_recording
from m3_memory.split import split_views


def _prepare(folder, cache, encoded):
    """What a build's preparation does with features: (kept rows, psc) of the training views."""
    model = load_model("clip-fixture")
    original = model.encode_frame
    model.encode_frame = lambda frame, index: (encoded.append(index), original(frame, index))[1]
    frames, indices = usable_frames(open_recording(folder), folder)
    maps = shared_features(model, frames, indices, folder, cache)
    train = split_views(len(frames))[0]
    comp = scene_components(model, [maps[i] for i in train], [indices[i] for i in train], default_threshold(model),
                            "strict", folder, cache)
    return comp.kept, comp.psc


def _rank(rank, port, folder, cache, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        encoded = []
        kept, psc = _prepare(folder, cache, encoded)
        group = distributed.current()
        torch.save({"kept": kept, "psc": psc, "encoded": encoded, "rank": group.rank, "world": group.world},
                   f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alone_the_group_is_a_world_of_one():
    group = distributed.current()
    assert (group.active, group.main, group.rank, group.world) == (False, True, 0, 1)
    group.barrier("nothing")
    values = torch.tensor([3, 1])
    assert group.broadcast_long(values, "nothing") is values
    assert group.all_gather(values, "nothing") is values and group.any(False, "nothing") is False


def test_two_ranks_split_the_frames_and_agree_with_one_process(synth, tmp_path):
    alone = []
    kept, psc = _prepare(synth.folder, tmp_path / "one", alone)
    assert sorted(alone) == list(range(10))
    out = tmp_path / "ranks"
    out.mkdir()
    mp.start_processes(_rank, args=(_free_port(), synth.folder, tmp_path / "two", out), nprocs=2, start_method="spawn")
    ranks = [torch.load(out / f"{r}.pt") for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    # each frame encoded once, rank r taking frames r, r + 2, ...; the other rank's maps read from the cache
    assert ranks[0]["encoded"] == [0, 2, 4, 6, 8] and ranks[1]["encoded"] == [1, 3, 5, 7, 9]
    for r in ranks:
        assert torch.equal(r["kept"], kept) and torch.equal(r["psc"], psc)
    model = load_model("clip-fixture")
    one, two = cache_folder(model, synth.folder, tmp_path / "one"), cache_folder(model, synth.folder, tmp_path / "two")
    names = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.safetensors"))
    assert len(names) == 11 and names == sorted(p.relative_to(two).as_posix() for p in two.rglob("*.safetensors"))
    for name in names:  # the maps byte for byte; the stored bank by value (its metadata's order is not fixed)
        if name.startswith("psc/"):
            a, b = load_file(str(one / name)), load_file(str(two / name))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.mark.parametrize("values", [torch.tensor([], dtype=torch.long), torch.tensor([5, 0, 7])])
def test_broadcast_long_sends_rank_zeros_values(tmp_path, values):
    out = tmp_path / "b"
    out.mkdir()
    mp.start_processes(_broadcast, args=(_free_port(), values, out), nprocs=2, start_method="spawn")
    for r in (0, 1):
        assert torch.equal(torch.load(out / f"{r}.pt"), values)


def _broadcast(rank, port, values, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(distributed.current().broadcast_long(values if rank == 0 else None, "the test"), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _lost_rank(rank, port, folder, cache, out):
    """Rank 1 dies as soon as the group exists; rank 0 records what its feature extraction raised."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    if rank == 1:
        os._exit(0)  # a crash: no goodbye to the other rank
    try:
        _prepare(folder, cache, [])
        outcome = ("finished", "")
    except Exception as err:  # noqa: BLE001 -- the test inspects whatever it was
        outcome = (type(err).__name__, str(err))
    torch.save(outcome, f"{out}/0.pt")


def test_a_rank_lost_during_feature_extraction_stops_the_others_with_one_line(synth, tmp_path):
    out = tmp_path / "lost"
    out.mkdir()
    mp.start_processes(_lost_rank, args=(_free_port(), synth.folder, tmp_path / "cache", out), nprocs=2,
                       start_method="spawn")
    kind, message = torch.load(out / "0.pt")
    assert kind == "RankLost", (kind, message)
    assert message.startswith("rank 0: another rank stopped answering during feature extraction")
    assert "\n" not in message


@pytest.mark.slow
def test_m3_features_under_torchrun_shares_the_frames_and_writes_once(synth, tmp_path):
    """``torchrun --nproc-per-node 2 -m m3_memory.cli features``: one process group, the frames
    split over the ranks, rank 0's bank written once and equal to a one-process run's."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "M3_CACHE": str(tmp_path / "cache2"), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(_free_port()), "-m", "m3_memory.cli", "features",
                          str(synth.folder), "--model", "clip-fixture", "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    one = subprocess.run([sys.executable, "-m", "m3_memory.cli", "features", str(synth.folder), "--model",
                          "clip-fixture", "--out", str(tmp_path / "one")],
                         env={**env, "M3_CACHE": str(tmp_path / "cache1")}, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "psc_clip.safetensors")) for d in ("one", "two"))
    assert torch.equal(a["kept"], b["kept"]) and torch.equal(a["psc"], b["psc"])
    maps = sorted((tmp_path / "cache2").rglob("*.safetensors"))
    assert len(maps) == 11  # ten frames' maps and the bank, each computed once

"""Feature extraction split over ranks under torch.distributed (two gloo processes on the CPU,
loopback): the shared cache and the kept principal scene components equal a one-process run."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from m3_memory import distributed
from m3_memory.foundation import load_model
from m3_memory.foundation.cache import cache_folder, shared_features
from m3_memory.memory.components import default_threshold, scene_components, split_views, usable_frames
from m3_memory.recording import open_recording


def _prepare(folder, cache, encoded):
    """What a build's preparation does with features: (kept rows, psc) of the training views."""
    model = load_model("clip-fixture")
    original = model.encode_frame
    model.encode_frame = lambda frame, index: (encoded.append(index), original(frame, index))[1]
    frames, indices = usable_frames(open_recording(folder), folder)
    maps = shared_features(model, frames, indices, folder, cache)
    train = split_views(len(frames), 8)[0]
    comp = scene_components(model, [maps[i] for i in train], [indices[i] for i in train], default_threshold(model),
                            "strict", folder, cache)
    return comp.kept, comp.psc


def _rank(rank, port, folder, cache, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        encoded = []
        kept, psc = _prepare(folder, cache, encoded)
        torch.save({"kept": kept, "psc": psc, "encoded": encoded, "rank": distributed.rank(),
                    "world": distributed.world_size()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alone_the_helpers_are_a_world_of_one():
    assert (distributed.active(), distributed.rank(), distributed.world_size()) == (False, 0, 1)
    distributed.barrier()
    values = torch.tensor([3, 1])
    assert distributed.broadcast_long(values) is values


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
        torch.save(distributed.broadcast_long(values if rank == 0 else None), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()

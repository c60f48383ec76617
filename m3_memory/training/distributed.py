"""Data-parallel training over views on ``torch.distributed``.

Launch with ``torchrun --nproc-per-node N -m m3_memory.cli build ...`` (or ``m3 build --nproc
N``, which runs torchrun for you; ``--nnodes`` and Slurm work the same way). Every process (a
*rank*) holds the whole, identical Gaussian set and renders its own slice of each iteration's
global batch of views (``TrainConfig.views_per_iteration``):

- the losses are summed over the rank's views and divided by the global batch size, and the
  gradients of everything optimised (Gaussians, queries, learned projections, background, pose
  corrections) are summed over the ranks in one all-reduce, so every rank takes the Adam step of
  the one-process run on the same global batch;
- density control reads the projected-centre gradients and radii of *all* views of the batch
  (all-gathered), is decided on rank 0 and broadcast (the per-Gaussian tensors and their Adam
  moments) whenever it changed the set, so every rank holds rank 0's Gaussians; a checksum at
  every checkpoint proves it;
- random choices (which views, which pixels) come from generators seeded identically on every
  rank, each rank taking its slice;
- only rank 0 evaluates, draws the progress bar, writes checkpoints and the memory; a checkpoint
  resumes with any number of ranks (rank 0 reads it and broadcasts the state).

Backends: NCCL on CUDA (rank ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``), gloo on the CPU. gsplat's
``rasterization(distributed=True)`` renders a set of Gaussians *sharded* over the ranks
(Grendel-GS); here every rank holds the whole set, so it would not help and is not used (the
log says so on CUDA).

Failures: every rank logs to ``<out>.logs/rank<k>.log``; a rank that fails prints its one-line
error prefixed with ``rank k``; torchrun then stops the other ranks, and a rank that loses a
peer inside a collective (training's, or the preparation's feature extraction and bank
broadcast: all go through :class:`m3_memory.distributed.Group`) stops with ``RankLost``.
Collectives time out after ``$M3_DIST_TIMEOUT_S`` seconds (default 600), so a hung rank cannot
hang the others for ever.
At start the ranks compare a hash of their code and options and refuse to run when they differ.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from m3_memory.distributed import Group
from m3_memory.errors import BuildFailed, InputError

if TYPE_CHECKING:
    from m3_memory.training.trainer import Trainer

log = logging.getLogger("m3")
KILL_ENV = "M3_TEST_KILL_RANK_AT"  # fault injection for tests: "<rank>:<iteration>" SIGKILLs that rank there
PACKAGE = Path(__file__).resolve().parents[1]  # the m3_memory sources hashed by code_version


def code_version() -> str:
    """Hash of the package version and every ``m3_memory`` source file: two ranks running
    different code get different values."""
    from m3_memory import __version__

    h = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def check_same(group: Group, options: dict) -> None:
    """Refuse to start (:class:`InputError` on every rank) when any rank runs other code or
    other options than rank 0: compares a hash of ``options`` and :func:`code_version`."""
    mine = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ours = (code_version(), mine)
    theirs = group.all_gather_object(ours, "the start-up check")
    for k, other in enumerate(theirs):
        if other != theirs[0]:
            what = "code (m3_memory sources)" if other[0] != theirs[0][0] else "build options"
            raise InputError(f"rank {k}", f"runs other {what} than rank 0 ({other[0]}/{other[1]} vs "
                             f"{theirs[0][0]}/{theirs[0][1]}); launch every rank with the same m3 and arguments")


def sync_trainer(group: Group, trainer: Trainer) -> None:
    """Every rank takes rank 0's whole training state (parameters, Adam moments, density
    statistics, random generators, memory banks): at the start and after a resume."""
    if not group.active:
        return
    blob = None
    if group.main:
        buf = io.BytesIO()
        torch.save({"trainer": trainer.state_dict(), "psc": {k: b.psc for k, b in trainer.banks.items()}}, buf)
        blob = buf.getvalue()
    blob = group.broadcast_object(blob, "the start-up state broadcast")
    if not group.main:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
        trainer.load_state_dict(state["trainer"])
        for name, psc in state["psc"].items():
            trainer.banks[name].psc = psc.to(trainer.device)


def broadcast_gaussians(group: Group, params: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                        names: tuple[str, ...]) -> None:
    """Rank 0's per-Gaussian tensors ``names`` and their Adam moments on every rank (after
    density control changed them on rank 0). Other ranks replace theirs; Adam's step count is
    the same on every rank and kept."""
    if not group.active:
        return
    n = group.broadcast(torch.tensor([params["means"].shape[0]], device=group.device), "density control")
    count = int(n.item())
    for name in names:
        old = params[name]
        opt = optimizers[name]
        state = opt.state.get(old, {})
        if group.main:
            tensors = [old.data] + [state[k] for k in ("exp_avg", "exp_avg_sq") if k in state]
        else:
            shape = (count, *old.shape[1:])
            new = torch.nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device))
            tensors = [new.data] + [torch.empty(shape, dtype=old.dtype, device=old.device)
                                    for k in ("exp_avg", "exp_avg_sq") if k in state]
        for t in tensors:
            group.broadcast(t, "density control")
        if not group.main:
            moments = dict(zip(("exp_avg", "exp_avg_sq"), tensors[1:]))
            opt.param_groups[0]["params"][0] = new
            opt.state.clear()
            if state:
                opt.state[new] = {**{k: v for k, v in state.items() if k not in moments}, **moments}
            params[name] = new


def check_identical(group: Group, trainer: Trainer, iteration: int) -> None:
    """:class:`BuildFailed` when any rank's Gaussians, background or projections differ from
    rank 0's (float64 sums of every tensor and the Gaussian count, compared exactly)."""
    if not group.active:
        return
    tensors = [*trainer.params.values(), trainer.background, *(b.W for b in trainer.banks.values())]
    sums = torch.tensor([float(trainer.params["means"].shape[0])] +
                        [float(t.detach().double().sum()) for t in tensors], dtype=torch.float64)
    everyone = group.all_gather_object(sums.tolist(), "the consistency check")
    for k, other in enumerate(everyone):
        if other != everyone[0]:
            raise BuildFailed(f"rank {k}", f"holds other Gaussians than rank 0 at iteration {iteration} "
                              f"(checksums {other[:2]} vs {everyone[0][:2]}); the ranks diverged")


def rank_log(out: Path, rank: int) -> logging.Handler:
    """A handler writing the ``m3`` log of this rank to ``<out>.logs/rank<k>.log`` (added to
    the ``m3`` logger; remove it when done)."""
    folder = log_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"rank{rank}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s rank " + str(rank) + " %(name)s %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("m3").addHandler(handler)
    logging.getLogger("m3").setLevel(logging.DEBUG)
    return handler


def log_folder(out: str | Path) -> Path:
    """Where the ranks of a build of ``out`` write their logs: ``<out>.logs``."""
    out = Path(out)
    return out.with_name(out.name + ".logs")


def fault_injection(rank: int, iteration: int) -> None:
    """Tests: ``$M3_TEST_KILL_RANK_AT=<rank>:<iteration>`` kills that rank (SIGKILL, as a crash)
    when it starts that iteration; ``<rank>:<iteration>:hang`` makes it stop answering instead
    (it sleeps until it is killed)."""
    spec = os.environ.get(KILL_ENV, "")
    if spec.removesuffix(":hang") != f"{rank}:{iteration}":
        return
    if spec.endswith(":hang"):
        log.warning("fault injection: rank %d hangs at iteration %d", rank, iteration)
        while True:
            time.sleep(60)
    log.warning("fault injection: rank %d killed at iteration %d", rank, iteration)
    os.kill(os.getpid(), signal.SIGKILL)


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a single-machine launch)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, out: Path) -> int:
    """``m3 build --nproc N``: run ``argv`` (an ``m3`` command line without ``--nproc``) as
    ``torchrun --nproc-per-node N --master-addr 127.0.0.1 --master-port <free> -m
    m3_memory.cli ...`` on this machine; returns the exit code. When a rank fails, torchrun
    stops the others; the error raised here is the first failed rank's one line (from its log
    in ``<out>.logs``) with its exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from m3_memory.errors import MissingDependency, SafetyRefusal

    args = get_args_parser().parse_args(["--nnodes", "1", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
                                         "--master-port", str(free_port()), "--max-restarts", "0", "-m",
                                         "m3_memory.cli", *argv])
    # torchrun's default is one thread per rank; share this machine's cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    log.info("launching %d ranks: torchrun --nproc-per-node %d -m m3_memory.cli %s", nproc, nproc, " ".join(argv))
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        if code in (130, 143):
            return code
        line = _last_error(log_folder(out) / f"rank{rank}.log")
        if line is not None:
            kinds = {2: InputError, 3: BuildFailed, 4: SafetyRefusal, 5: MissingDependency}
            problem = line.split(": ", 1)[1] if line.startswith(f"rank {rank}: ") else line
            raise kinds.get(code, BuildFailed)(f"rank {rank}", problem) from None
        how = f"was killed by {failure.signal_name()}" if code < 0 else f"exited with code {code}"
        raise BuildFailed(f"rank {rank}", f"{how}; the other ranks were stopped and no memory was written (logs: "
                          f"{log_folder(out)}); continue from the last checkpoint with --resume") from None
    return 0


def _last_error(path: Path) -> str | None:
    """The message of the last ``ERROR`` line of a rank's log (None: none, or no log)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.split(" ERROR: ", 1)[1] for line in lines if " ERROR: " in line]
    return errors[-1] if errors else None

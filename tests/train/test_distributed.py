"""Data parallel training (equikit.train.distributed): two gloo ranks on CPU give the same
parameters as one process on the same global batches (float64, forces trained through a
create_graph derivative), also across an interrupted and resumed run; the per-rank loss
normalisation reproduces the global-batch mean (and the naive mean of per-rank means does not);
sharding and bad input."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equikit.cli import train_potential as tp
from equikit.data.atoms import collate_atoms
from equikit.models.potential import Potential, PotentialConfig
from equikit.train import TrainConfig, fit
from equikit.train.distributed import (
    DistributedContext,
    all_reduce_gradients,
    all_reduce_sums,
    check_global_batch,
    init_distributed,
    shard,
)

WORKER = Path(__file__).with_name("ddp_potential_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("ddp_potential_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_ranks(out: Path, *args: str) -> None:
    """Start the worker as ranks 0 and 1 with the environment torchrun would give them."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log}"


def _single_process(out: Path) -> None:
    worker = _worker_module()
    tp_plots = tp.write_plots
    try:
        worker.main([str(out)])
    finally:
        tp.write_plots = tp_plots


def _assert_same_training(one: Path, two: Path) -> None:
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    assert a["loop"]["step"] == b["loop"]["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key, x in a["model"].items():  # raw weights, EMA weights, EMA step count
        if x.is_floating_point():
            torch.testing.assert_close(b["model"][key], x, rtol=1e-10, atol=1e-12, msg=key)
        else:
            assert torch.equal(b["model"][key], x), key
    for state in a["optimizer"]["state"]:  # Adam moments
        torch.testing.assert_close(b["optimizer"]["state"][state]["exp_avg_sq"],
                                   a["optimizer"]["state"][state]["exp_avg_sq"], rtol=1e-10, atol=1e-20)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert sb["world_size"] == 2 and sa["world_size"] == 1
    for key in ("val_loss", "val_forces_mae", "test_loss", "test_energy_mae_per_atom"):
        assert sb[key] == pytest.approx(sa[key], rel=1e-10)
    ma, mb = ((d / "metrics.csv").read_text().splitlines() for d in (one, two))
    assert len(ma) == len(mb) == 4  # header + 3 epochs, written once (rank 0 only)


def test_two_gloo_ranks_train_like_one_process_on_the_global_batch(tmp_path):
    _single_process(tmp_path / "one")
    _launch_two_ranks(tmp_path / "two")
    _assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_torchrun_interrupted_and_resumed_equals_one_uninterrupted_process(tmp_path):
    _single_process(tmp_path / "one")
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(WORKER), str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*run, "3"], check=True, env=env, timeout=300, capture_output=True)  # stops mid-epoch 2
    assert torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["loop"]["step"] == 3
    run[6] = str(_free_port())
    subprocess.run([*run, "--resume"], check=True, env=env, timeout=300, capture_output=True)
    _assert_same_training(tmp_path / "one", tmp_path / "two")


# --------------------------------------------------------------------------- loss normalisation
@pytest.fixture(scope="module")
def model_and_batch():
    worker = _worker_module()
    frames = worker.make_frames()[[0, 1, 4, 7]]  # 3, 4, 6, 5 atoms: the shards hold 7 and 11
    torch.manual_seed(0)
    cfg = PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=2,
                          radial_mlp=(8,), num_interactions=2, cutoff=3.0)
    return Potential(cfg), frames


def _grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, materialize_grads=True)


def test_rank_losses_average_to_the_global_batch_loss_and_gradient(model_and_batch):
    model, frames = model_and_batch
    s = tp.PotentialTrainConfig(forces_weight=10.0)
    whole = collate_atoms([frames[i] for i in range(4)])
    ref = tp.potential_loss(model, whole, s)
    ref_grad = _grads(model, ref)
    n_atoms = int(whole.natoms.sum())
    losses, grads = [], []
    for rank in (0, 1):
        mine = shard(range(4), DistributedContext(rank=rank, world_size=2))
        part = tp.BatchShard(collate_atoms([frames[i] for i in mine]), 4, n_atoms, False, 2)
        losses.append(tp.potential_loss(model, part, s))
        grads.append(_grads(model, losses[-1]))
    torch.testing.assert_close((losses[0] + losses[1]) / 2, ref, rtol=1e-12, atol=0)
    for g0, g1, g in zip(*grads, ref_grad):
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-10, atol=1e-14)
    # negative control: averaging each rank's own mean (the naive DDP loss) is not the global mean
    naive = sum(tp.potential_loss(model, collate_atoms([frames[i] for i in shard(
        range(4), DistributedContext(rank=r, world_size=2))]), s) for r in (0, 1)) / 2
    assert abs(float((naive - ref).detach())) > 1e-3 * abs(float(ref.detach()))


def test_an_empty_shard_gives_a_zero_loss_with_zero_gradients(model_and_batch):
    model, _ = model_and_batch
    loss = tp.potential_loss(model, tp.BatchShard(None, 1, 3, False, 2), tp.PotentialTrainConfig())
    assert float(loss.detach()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in _grads(model, loss))


# --------------------------------------------------------------------------- helpers and bad input
@pytest.mark.parametrize("n", [0, 1, 5, 8, 9])
def test_shards_partition_the_global_batch_in_order(n):
    parts = [shard(list(range(n)), DistributedContext(rank=r, world_size=3)) for r in range(3)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_one_process_helpers_are_identities():
    ctx = init_distributed(env={})
    assert (ctx.world_size, ctx.rank, ctx.enabled, ctx.is_main) == (1, 0, False, True)
    assert init_distributed(env={"WORLD_SIZE": "1", "RANK": "0"}) == ctx
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.arange(3.0)
    assert all_reduce_gradients([p], ctx) is None and p.grad.tolist() == [0.0, 1.0, 2.0]
    assert all_reduce_sums({"a": 1.5}, ctx) == {"a": 1.5}


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"train_potential: the global `batch_size` 3 is not divisible by the world "
                                         r"size 2; use a multiple of 2"):
        tp.train_potential(TrainConfig(batch_size=3, extra={}), distributed=DistributedContext(rank=0, world_size=2))
    with pytest.raises(ValueError, match="RANK"):
        init_distributed(env={"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an int"):
        init_distributed(env={"WORLD_SIZE": "two", "RANK": "0"})
    with pytest.raises(ValueError, match="`backend`"):
        init_distributed("mpi", env={})
    with pytest.raises(TypeError, match="`distributed` must be a DistributedContext"):
        tp.train_potential(TrainConfig(extra={}), distributed=2)
    lin = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match="fit: `distributed` must be a DistributedContext"):
        fit(lin, torch.optim.SGD(lin.parameters(), lr=0.1), lambda e, g: [], lambda m, b: 0, TrainConfig(),
            distributed="gloo")
    check_global_batch(4, DistributedContext(rank=1, world_size=2), "x")  # divisible: no error

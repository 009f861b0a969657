"""Worker of tests/train/test_distributed.py: trains a tiny potential with
``train_potential`` on 12 small random molecules of different sizes (3-6 atoms, so the two
ranks' shards hold different numbers of atoms). Run it plainly (one process) or under
``python -m torch.distributed.run --nproc_per_node 2`` (two gloo ranks); rank 0 writes
``OUT/checkpoint.pt`` and ``OUT/summary.json``.

    python ddp_potential_worker.py OUT [MAX_STEPS] [--resume]
"""

import sys

import torch

from equikit.cli import train_potential as tp
from equikit.data.atoms import AtomsBatch
from equikit.train import TrainConfig
from equikit.train.distributed import close_distributed, init_distributed

NATOMS = [3, 4, 5, 3, 6, 4, 3, 5, 4, 3, 5, 6]
MODEL = {"hidden_irreps": "4x0e + 4x1o", "max_ell": 1, "correlation": 2, "radial_mlp": [8],
         "num_interactions": 2, "cutoff": 3.0}


def make_frames() -> AtomsBatch:
    """12 labelled molecules (H and O, random positions in a 2.5 A box, random labels), float64."""
    g = torch.Generator().manual_seed(7)
    n = sum(NATOMS)
    return AtomsBatch.from_arrays(
        positions=torch.rand(n, 3, generator=g, dtype=torch.float64) * 2.5,
        numbers=torch.where(torch.rand(n, generator=g) < 0.5, 1, 8), natoms=NATOMS,
        energy=torch.randn(len(NATOMS), generator=g, dtype=torch.float64),
        forces=torch.randn(n, 3, generator=g, dtype=torch.float64))


def make_config(max_steps=None) -> TrainConfig:
    """Global batch of 4 structures, 8 training frames: 2 steps an epoch, 3 epochs, Adam, EMA."""
    return TrainConfig(epochs=3, batch_size=4, lr=1e-2, seed=3, max_steps=max_steps, verbose=False,
                       progress=False, extra={"model": dict(MODEL), "val_fraction": 2 / 12, "test_fraction": 2 / 12,
                                              "ema_decay": 0.9, "forces_weight": 10.0})


def main(argv) -> None:
    torch.set_num_threads(1)
    out, max_steps = argv[0], int(argv[1]) if len(argv) > 1 and argv[1] != "--resume" else None
    tp.write_plots = lambda *args, **kwargs: []  # plots cost seconds and are tested elsewhere
    ctx = init_distributed()
    try:
        tp.train_potential(make_config(max_steps), out, frames=make_frames(), distributed=ctx,
                        resume="--resume" in argv)
    finally:
        close_distributed(ctx)


if __name__ == "__main__":
    main(sys.argv[1:])

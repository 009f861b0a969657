"""Offline data: generators with a cache (no downloads at run time), datasets and collation.

- :mod:`equikit.data.nbody`: the charged n-body system (EGNN protocol) and its dataset.
"""

from equikit.data._cache import data_dir
from equikit.data.nbody import (
    ChargedNBodyConfig,
    NBodyBatch,
    NBodyDataset,
    NBodySample,
    NBodyTrajectories,
    collate_nbody,
    complete_edge_index,
    generate_charged_nbody,
    load_charged_nbody,
    simulate_charged,
    simulate_charged_reference,
)

__all__ = [
    "ChargedNBodyConfig",
    "NBodyBatch",
    "NBodyDataset",
    "NBodySample",
    "NBodyTrajectories",
    "collate_nbody",
    "complete_edge_index",
    "data_dir",
    "generate_charged_nbody",
    "load_charged_nbody",
    "simulate_charged",
    "simulate_charged_reference",
]

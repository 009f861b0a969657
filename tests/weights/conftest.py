import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The networks here are tiny: on a shared, loaded machine intra-op threads only add
    contention (a 8x8 linear layer took 19 ms with 2 threads, 0.09 ms with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

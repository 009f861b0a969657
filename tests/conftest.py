import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "equikit",
    max_examples=int(os.environ.get("EQUIKIT_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("equikit")

DTYPES = [torch.float32, torch.float64]
# DESIGN §4: float64 1e-10 relative, float32 1e-5 relative
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Fixed seed; one intra-op thread: the tensors in tests are small, and on a shared
    2-core machine extra threads only add contention (an 8x8 linear layer took 19 ms with 2
    threads, 0.09 ms with 1)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small models: one intra-op thread avoids oversubscription stalls on a shared 2-core machine.
    Restores the previous thread count afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """These tensors are tiny: one thread is faster than two (and than fighting other processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

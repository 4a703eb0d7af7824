import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: more threads only wait on each other, and on
    whatever else the machine runs. Restored for the tests after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

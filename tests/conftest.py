"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny tensors: one intra-op thread avoids OpenMP contention on small CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

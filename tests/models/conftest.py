from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # These models are tiny; on a shared 2-core machine a multi-threaded matmul spends most
    # of its time waiting for the other thread (measured: 17x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""One PyTorch thread for modules that train or score small networks: on a shared 2-core
machine the default thread pool oversubscribes and stalls. Use it in a test module with
`from tests.torch_threads import one_thread  # noqa: F401` (an autouse, module-scoped fixture)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

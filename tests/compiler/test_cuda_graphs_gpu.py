"""CUDA-graph replay of a compiled program (GPU only)."""
import pytest
import torch

import braze

pytestmark = pytest.mark.gpu


def test_cuda_graph_replay_matches_eager_and_returns_fresh_outputs():
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).cuda().eval()
    fast = braze.jit(model, cuda_graphs=True, strict=True)
    with torch.no_grad():
        outs = []
        for _ in range(3):
            x = torch.randn(8, 64, device="cuda")
            y = fast(x)
            torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-4)
            outs.append(y)
        assert outs[0].data_ptr() != outs[1].data_ptr()  # not the graph's static buffer

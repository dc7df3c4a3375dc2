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


def test_padded_bert_replays_a_cuda_graph_without_host_copies_in_capture():
    """Issue 17: BERT with ``cuda_graphs=True`` failed with "Cannot copy between CPU and CUDA
    tensors during CUDA graph capture"; the padding prologue (token count, host sync) now runs
    before the captured body. Valid rows equal eager's on every call, captured or not."""
    from tools import hf_models

    model = hf_models.build("bert", device="cuda")
    inp = {k: v.cuda() for k, v in hf_models.inputs(3, 16, padding="right", lengths=[16, 5, 9]).items()}
    fast = braze.jit(model, cuda_graphs=True, strict=True)
    with torch.no_grad():
        want = model(**inp).last_hidden_state
        for _ in range(3):                                  # the first call runs, the second captures
            got = fast(**inp).last_hidden_state
            valid = inp["attention_mask"].bool()
            torch.testing.assert_close(got[valid], want[valid], rtol=1e-4, atol=1e-4)


def test_a_captured_graph_keeps_the_weights_it_read_when_their_data_is_swapped():
    """A parameter rebound after capture (``p.data = ...``, as shared_constants does for a
    later graph's concatenation) must not free the storage the captured graph reads: the
    replay still computes with the weights it was captured on, never with freed memory."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64)).cuda().eval()
    fast = braze.jit(model, cuda_graphs=True, strict=True)
    x = torch.randn(4, 64, device="cuda")
    with torch.no_grad():
        want = model(x)
        for _ in range(3):
            fast(x)
        for p in model.parameters():
            p.data = p.data.clone()                      # the old storages: only the graph holds them
        junk = [torch.full((64, 64), float("nan"), device="cuda") for _ in range(64)]   # reuse freed blocks
        got = fast(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    del junk

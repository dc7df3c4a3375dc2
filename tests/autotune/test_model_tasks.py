"""Tuning tasks of a whole model: a padding-eliminated model's kernels are tuned at
the token count its runs plan for (found on the GPU: the packed token count was
unbound and ``braze tune`` of a padded batch raised KeyError)."""
import pytest

from braze.compiler.tune_model import model_tasks
from tools import hf_models
from braze.config import Options


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_tasks_of_a_padding_eliminated_model_bind_the_token_count(cuda_graphs):
    """With cuda_graphs the artifact is the plain program (it crashed before)."""
    model = hf_models.build("llama", num_hidden_layers=1)
    model.config.use_cache = False
    inp = hf_models.inputs(2, 16, padding="right")
    valid = int(inp["attention_mask"].sum())
    assert valid < 2 * 16
    tasks, art = model_tasks(model, (), inp, Options(cuda_graphs=cuda_graphs))
    graph = art.program.graph
    assert graph.sym_bounds, "padding elimination did not apply: the test checks nothing"
    (sym, _), = graph.sym_bounds
    rows = {v for t in tasks for k, v in t.env.items() if k == sym}
    assert rows == {2 * 16}              # the packed tokens at their bound, as a run plans them
    assert tasks and all(t.ir for t in tasks)

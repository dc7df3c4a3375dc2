import logging
import os
import tempfile

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never read or write the user's tuning database (~/.cache/braze/tuning.db):
# each test process gets its own, so results cannot leak between runs.
os.environ.setdefault("BRAZE_TUNING_DB", os.path.join(tempfile.mkdtemp(prefix="braze-test-db-"), "tuning.db"))
os.environ.setdefault("BRAZE_PROGRESS", "0")
logging.getLogger("transformers").setLevel(logging.ERROR)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_state():
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()

"""Fixtures for the Triton codegen tests.

On the CPU (CI) the kernels run under ``TRITON_INTERPRET=1`` on CPU tensors;
set ``BRAZE_TEST_DEVICE=cuda`` to run the same tests compiled on a GPU.
The interpreter is switched on only while these tests run (other tests in
the same process must not see Triton accept CPU groups).
"""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("BRAZE_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _triton_mode(monkeypatch, tmp_path_factory):
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "braze-cache"))
    yield


@pytest.fixture
def device() -> str:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("BRAZE_TEST_DEVICE=cuda but no GPU")
    return DEVICE

"""Running a function that writes its arguments in place both eagerly and under braze."""
from __future__ import annotations

import torch

from braze.compiler.backend import make_backend
from braze.config import Options


def compile_strict(fn, reports=None):
    return torch.compile(fn, backend=make_backend(Options(strict=True), reports))


def run_both(fn, *args):
    """(eager result, eager args after the call), (braze result, braze args after the call), reports."""
    a = [x.clone() if isinstance(x, torch.Tensor) else x for x in args]
    b = [x.clone() if isinstance(x, torch.Tensor) else x for x in args]
    reports: list = []
    with torch.no_grad():
        want = fn(*a)
        got = compile_strict(fn, reports)(*b)
    return (want, a), (got, b), reports


def assert_same_effects(a, b) -> None:
    """Every argument ends bit-identical after the eager and the braze call."""
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(y, x, rtol=0, atol=0)

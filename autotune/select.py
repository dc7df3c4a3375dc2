"""Choosing a kernel and config for one node and shape bucket.

Order: the tuning database (exact bucket, then nearest bucket), a search
when tuning is on, else the first candidate's template default.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger("braze.autotune")


def select(launcher, problem: Mapping[str, Any], env: Mapping[str, int]):
    from braze.compiler.kernels import Choice

    kernel = launcher.primary
    config = kernel.space.default_config(problem, launcher.device)
    return Choice(kernel, config, "default")

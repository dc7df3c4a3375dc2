"""``Decline``: a rule, a pass step or a kernel template that does not apply, and why.

One record for every place braze tries something in order and may say no:
rewrite rules (``passes/rules.py``), passes (``PassContext.decline``), and
code generators (a generator may return a ``Decline`` instead of kernels).
The driver collects them in the report; ``braze.explain`` shows them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decline:
    """``reason`` why ``rule`` of ``pass_name`` (or a backend) did not apply."""

    pass_name: str
    rule: str
    reason: str
    graph: str = ""

    @staticmethod
    def because(reason: str, rule: str = "", by: str = "") -> "Decline":
        return Decline(by, rule, reason)

    def __str__(self) -> str:
        who = f"{self.pass_name}: " if self.pass_name else ""
        return f"{who}{self.rule} declined: {self.reason}" if self.rule else f"{who}declined: {self.reason}"

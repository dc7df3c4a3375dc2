"""The compile-time check of a program against eager on the example inputs.

braze equals eager on every valid token. At padding positions it does not
promise eager's values: a padding-eliminated program writes zeros there
(``ir/padding.py``), and a padded one may differ where a query sees no
unmasked key (a padding token under left padding: braze's attention gives
it zeros or an average over the keys it visits, eager an average over every
key; Hugging Face documents these outputs as meaningless). So, per output leaf:

- an unpacked output (``ir/padding.padded_outputs``) is compared on the
  valid tokens and must be zero at padding positions;
- an output of a padded program shaped ``[batch, seq, ...]`` like the
  example's padding mask is compared everywhere, and on the valid tokens
  only if that fails there alone;
- an output computed from padding positions (BERT's pooler reads token 0) is
  compared, and left unchecked if it differs.

Every relaxation used is recorded in the artifact's manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
import torch.utils._pytree as pytree
from braze.ir.padding import padded_outputs

UNPACKED, PADDED, LENIENT = "unpacked", "padded", "lenient"


@dataclass
class CheckResult:
    max_rel_err: float
    problem: Optional[str]
    valid_tokens_only: list = field(default_factory=list)   # leaves compared on valid tokens (a padded program)
    unchecked: list = field(default_factory=list)           # lenient leaves that differed

    def manifest(self) -> dict:
        out: dict = {"max_rel_err": self.max_rel_err}
        if self.valid_tokens_only:
            out["valid_tokens_only"] = self.valid_tokens_only
        if self.unchecked:
            out["unchecked_outputs"] = self.unchecked
        return out


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float32: 1e-3, torch.float64: 1e-6}.get(dtype, 5e-2)


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    if not b.numel():
        return 0.0
    if not b.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    scale = float(b.double().abs().max()) or 1.0
    return float((a.double() - b.double()).abs().max()) / scale


def compare_outputs(got, want, policy: Optional[Mapping[int, tuple]] = None) -> CheckResult:
    """Compare output leaves; ``policy``: leaf -> (UNPACKED | PADDED, mask [batch, seq]) or (LENIENT, None)."""
    g, w = pytree.tree_leaves(got), pytree.tree_leaves(want)
    res = CheckResult(0.0, None)
    if len(g) != len(w):
        res.max_rel_err, res.problem = float("inf"), f"{len(g)} outputs, eager has {len(w)}"
        return res
    policy = policy or {}
    for i, (a, b) in enumerate(zip(g, w)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                res.max_rel_err, res.problem = float("inf"), f"output {i} is {a!r}, eager gives {b!r}"
                return res
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            res.max_rel_err = float("inf")
            res.problem = f"output {i}: {a.dtype}{list(a.shape)}, eager gives {b.dtype}{list(b.shape)}"
            return res
        kind, mask = policy.get(i, (None, None))
        if mask is not None:
            mask = mask.to(a.device)
            if tuple(mask.shape) != tuple(a.shape[:mask.dim()]):
                kind = LENIENT if kind == PADDED else kind
                if kind == UNPACKED:
                    res.max_rel_err = float("inf")
                    res.problem = f"output {i}: {list(a.shape)} is not [batch, seq, ...] of its mask"
                    return res
        if kind == UNPACKED:
            if torch.count_nonzero(a[~mask]):
                res.max_rel_err, res.problem = float("inf"), f"output {i}: nonzero at padding positions"
                return res
            a, b = a[mask], b[mask]
        err = _error(a, b)
        if not err <= tolerance(b.dtype) and kind == PADDED:
            err = _error(a[mask], b[mask])
            if err <= tolerance(b.dtype):
                res.valid_tokens_only.append(i)
        if not err <= tolerance(b.dtype):
            if kind == LENIENT:
                res.unchecked.append(i)
                continue
            res.max_rel_err = err
            res.problem = (f"output {i} differs from eager" if not b.is_floating_point() else
                           f"output {i}: max relative error {err:.3g} > {tolerance(b.dtype):g}")
            return res
        res.max_rel_err = max(res.max_rel_err, err)
    return res


def policy_for(graph, input_names: list, inputs: list, out_leaves: list) -> dict:
    """The per-leaf policy of ``compare_outputs`` for a compiled ``graph``: ``inputs``
    are its input tensors (names ``input_names``), ``out_leaves`` the manifest's
    (kind, graph output index) per output leaf."""
    mask_i, kinds = padded_outputs(graph)
    if mask_i is None and not kinds:
        mask_i = _mask_input(input_names, inputs)
    if mask_i is None:
        return {}
    if inputs[mask_i] is None:
        return {}
    mask = inputs[mask_i] != 0
    if mask.dim() != 2 or bool(mask.all()):
        return {}
    out = {}
    for leaf, (kind, x) in enumerate(out_leaves):
        if kind != "value":
            continue
        k = kinds.get(x)
        if k == "unpacked":
            out[leaf] = (UNPACKED, mask)
        elif k == "derived":
            out[leaf] = (LENIENT, None)
        elif not kinds:  # a padded program: every output may read padding positions
            out[leaf] = (PADDED, mask)
    return out


def _mask_input(names: list, inputs: list) -> Optional[int]:
    """The padding mask of a padded program: its one ``[batch, seq]`` integer or bool
    input named like a mask, holding only 0 and 1 (Hugging Face's ``attention_mask``)."""
    found = [i for i, (n, x) in enumerate(zip(names, inputs))
             if x is not None and "mask" in n.lower() and x.dim() == 2 and not x.is_floating_point()
             and bool(((x == 0) | (x == 1)).all())]
    return found[0] if len(found) == 1 else None


__all__ = ["CheckResult", "compare_outputs", "policy_for", "tolerance", "UNPACKED", "PADDED", "LENIENT"]

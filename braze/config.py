"""braze options: one frozen dataclass, validated where users pass it."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

BACKENDS = ("auto", "triton", "tvm", "torch")


@dataclass(frozen=True)
class Options:
    """How braze compiles.

    backend: "auto" (Triton on CUDA, TVM on the CPU, library calls where they
        win), "triton", "tvm", or "torch" (the reference runtime, no codegen).
    fuse: run the fusion passes.
    tune: search configs for kernels the tuning database does not know.
    tuning_db: path or SQLAlchemy URL of the tuning database (default:
        $BRAZE_TUNING_DB or ~/.cache/braze/tuning.db).
    dump: folder to write the IR after each pass and generated sources
        (default: $BRAZE_DUMP).
    verify: run the verifier after each pass (types too with verify_types).
    disable: names of passes to skip.
    strict: raise on anything braze cannot compile instead of running that
        graph eagerly (for tests and debugging).
    cuda_graphs: replay each plan as a CUDA graph (True), never (False), or
        None (default): for graphs that write a caller's buffer in place on a
        GPU (a decode step with a KV cache), where launching dominates.
    """

    backend: str = "auto"
    fuse: bool = True
    tune: bool = False
    tuning_db: Optional[str] = None
    dump: Optional[str] = None
    verify: bool = True
    verify_types: bool = False
    disable: tuple[str, ...] = ()
    strict: bool = False
    cuda_graphs: Optional[bool] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"braze option backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if isinstance(self.disable, (list, set)):
            object.__setattr__(self, "disable", tuple(self.disable))
        if self.dump is None and os.environ.get("BRAZE_DUMP"):
            object.__setattr__(self, "dump", os.environ["BRAZE_DUMP"])

    @staticmethod
    def from_dict(d: Optional[Mapping[str, Any]] = None, **more) -> "Options":
        d = dict(d or {}, **more)
        known = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"unknown braze option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return Options(**d)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (``Options.from_dict`` reads it back)."""
        default = Options()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def replace(self, **kw) -> "Options":
        return dataclasses.replace(self, **kw)

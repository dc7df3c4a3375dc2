"""braze options: one frozen dataclass, validated where users pass it.

It lives in the lowest layer that reads options (the selector and the tuner
read ``tune``, ``tuning_db``, ``backend``); passes get them through their
``PassContext``; ``braze.Options`` re-exports it. A wrong name or a wrong
type is refused with the field, what was given and what is expected.
"""
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
        if isinstance(self.disable, (list, set)):
            object.__setattr__(self, "disable", tuple(self.disable))
        if isinstance(self.disable, str):
            object.__setattr__(self, "disable", (self.disable,))
        for name in ("tuning_db", "dump"):  # a pathlib.Path is a path too
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name, (kinds, what) in _TYPES.items():
            v = getattr(self, name)
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                raise TypeError(f"braze option {name}={v!r}: expected {what}, got {type(v).__name__}")
        if self.backend not in BACKENDS:
            raise ValueError(f"braze option backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        bad = [d for d in self.disable if not isinstance(d, str)]
        if bad:
            raise TypeError(f"braze option disable={self.disable!r}: expected pass names (strings)")
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


# Field -> (accepted types, how the error says it).
_TYPES = {
    "backend": ((str,), "a string"),
    "fuse": ((bool,), "True or False"),
    "tune": ((bool,), "True or False"),
    "tuning_db": ((str, type(None)), "a path or URL string, or None"),
    "dump": ((str, type(None)), "a folder path, or None"),
    "verify": ((bool,), "True or False"),
    "verify_types": ((bool,), "True or False"),
    "disable": ((tuple,), "a list of pass names"),
    "strict": ((bool,), "True or False"),
    "cuda_graphs": ((bool, type(None)), "True, False or None (automatic)"),
    "extra": ((Mapping,), "a dict"),
}

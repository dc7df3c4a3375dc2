"""What braze did to a graph: the IR after each pass and the kernels it runs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from braze.passes.runner import PassRecord


@dataclass
class KernelRecord:
    name: str
    ops: list[str]
    backend: str          # "triton" | "tvm" | "library" | "torch"
    config: dict
    config_source: str    # "database" | "search" | "default" | "n/a"
    source_hash: str = ""


@dataclass
class GraphReport:
    name: str
    input_ir: str = ""
    passes: list[PassRecord] = field(default_factory=list)
    kernels: list[KernelRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fallback: Optional[str] = None   # why the graph runs eagerly, if it does
    compile_ms: float = 0.0
    every_pass_ir: bool = False      # keep the IR after every pass (braze.explain), not only the last
    # NOTE: the launches in order: KernelRecords, or launchers whose record is
    # read when the report is shown (their config is chosen when a shape runs).
    entries: list = field(default_factory=list, repr=False, compare=False)

    def refresh(self) -> None:
        if self.entries:
            self.kernels = [e if isinstance(e, KernelRecord) else e.record() for e in self.entries]

    @property
    def final_ir(self) -> str:
        return self.passes[-1].ir if self.passes else self.input_ir

    def to_dict(self) -> dict[str, Any]:
        self.refresh()
        # Not asdict(self): it would deep-copy the launchers in ``entries``
        # (compiled modules among them) only to drop them.
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "entries"}

    def __str__(self) -> str:
        self.refresh()
        lines = [f"== graph {self.name} ({self.compile_ms:.0f} ms to compile)"]
        if self.fallback:
            lines.append(f"   runs eagerly: {self.fallback}")
        for p in self.passes:
            lines.append(f"   pass {p.name:<22} {p.ms:8.1f} ms  nodes {p.nodes_before} -> {p.nodes_after}")
        if self.kernels:
            lines.append(f"   {len(self.kernels)} launches:")
            for k in self.kernels:
                cfg = ", ".join(f"{a}={b}" for a, b in k.config.items()) or "-"
                lines.append(f"     {k.name:<40} {k.backend:<8} {k.config_source:<9} {cfg}  [{' '.join(k.ops)}]")
        for n in self.notes:
            lines.append(f"   note: {n}")
        return "\n".join(lines)


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, (PassRecord, KernelRecord)):
        return asdict(v)
    return v


@dataclass
class Report:
    """braze.explain's result: one GraphReport per captured graph."""

    graphs: list[GraphReport] = field(default_factory=list)
    graph_breaks: int = 0
    summary: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"graphs": [g.to_dict() for g in self.graphs], "graph_breaks": self.graph_breaks,
                "summary": list(self.summary), "torch_ops": self.torch_ops}

    @property
    def kernels(self) -> list[KernelRecord]:
        return [k for g in self.graphs for k in g.kernels]

    @property
    def torch_ops(self) -> dict[str, int]:
        """The ops that run through their torch reference (not a generated kernel
        or a library candidate chosen for them), with how often, by op name."""
        out: dict[str, int] = {}
        for k in self.kernels:
            if k.backend == "torch":
                for op in k.ops:
                    out[op] = out.get(op, 0) + 1
        return dict(sorted(out.items()))

    def __str__(self) -> str:
        head = f"braze: {len(self.graphs)} graph(s), {self.graph_breaks} graph break(s), " \
               f"{len(self.kernels)} launches"
        head = "\n".join([head] + list(self.summary))
        if self.torch_ops:
            head += "\nruns through its torch reference: " + ", ".join(
                f"{op} x{n}" for op, n in self.torch_ops.items())
        body = "\n".join(str(g) for g in self.graphs)
        ir = "\n".join(f"-- final IR of {g.name}\n{g.final_ir}" for g in self.graphs)
        return f"{head}\n{body}\n{ir}"

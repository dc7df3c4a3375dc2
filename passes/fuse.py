"""Vertical fusion: partition the graph into fusion groups (``ir/fused.py``).

Three kinds of group, formed in this order (earlier kinds claim nodes first):

1. ``gemm``: a GEMM (mm, addmm, bmm) and its pointwise epilogue: bias,
   activation, scaling, residual add, casts, and slices/reshapes of its
   output (the gate/up halves of a horizontally fused MLP GEMM); a GEMM
   with no epilogue is a group of its own. At decode (at most
   ``PROLOGUE_MAX_ROWS`` static rows) the norm that computes the GEMM's A
   operand and is read by nothing else joins too, as a row-scale prologue
   (``compiler/codegen/triton/row_scale.py``): one launch less per norm, and
   the normalised row is never written. With more rows each of the GEMM's
   column tiles would redo the norm, so the norm keeps its own kernel.
2. ``reduction``: a reduction over the last dimension with its pointwise
   prologue and epilogue on the same rows: softmax, LayerNorm, RMSNorm,
   add + RMSNorm (whose sum is a second output).
3. ``pointwise``: the remaining chains of pointwise ops (rotary embeddings,
   activations, masks), with the layout ops between them.

Between 2 and 3, an ``unpack`` of a gemm or reduction group's output joins
that group as a scatter store (``scatter_stores``).

Legality: a group must stay convex: no path may leave it and come back
(through single nodes or other groups); checked on the networkx view with a
search bounded by the group's span in topological order. No group
recomputes a large intermediate: a node whose shape differs from the
group's domain joins only if nothing outside the group reads it. Layout
ops at a group's boundary stay outside as views (free): kernels read
strided operands. A group is formed only if a code generator accepts it
(``compiler/codegen.supported``, "is this supported here?"); otherwise its
ops run one by one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from braze.ir import Category, Graph, Node, get_op
from braze.passes.context import PassContext
from braze.ir.fused import fuse_groups, subgraph_of, unbound_symbols
from braze.ir.types import TensorType, dim_mul, dim_symbols, dims_equal, eval_dim

GEMMS = frozenset({"mm", "addmm", "bmm", "quant_linear"})
PROLOGUE_MAX_ROWS = 4      # decode rows: the GEMM then reads A once per column tile anyway
REDUCTIONS = frozenset({"sum", "mean", "amax", "amin", "var", "var_mean", "_softmax", "_log_softmax"})
LAYOUT = frozenset({"reshape", "permute", "expand", "slice", "select", "cat"})
# Layout ops that are free views at a group boundary (cat is not: it copies).
VIEWS = LAYOUT - {"cat"}
log = logging.getLogger("braze.passes")


@dataclass(frozen=True)
class FuseConfig:
    """``check(kind, subgraph) -> bool``: can some backend generate this group?"""

    check: Callable[[str, Graph], bool]
    max_nodes: int = 96


def _numel(t: TensorType):
    n = 1
    for d in t.shape:
        n = dim_mul(n, d)
    return n


def is_pointwise(n: Node) -> bool:
    # NOTE: an op moving data between devices (a CPU step counter copied to the GPU)
    # is a transfer, not arithmetic: no kernel of one device reads the other's memory.
    return get_op(n.op).category == Category.POINTWISE and bool(n.inputs) and all(
        v.type.device == n.types[0].device for v in n.inputs)


def is_layout(n: Node) -> bool:
    return n.op in LAYOUT


def is_widening_cast(n: Node) -> bool:
    """A float cast to a wider float type (``h.float()`` before a norm)."""
    if n.op != "_to_copy" or not n.inputs:
        return False
    a, b = n.args[0].type.dtype, n.type.dtype
    return a.is_floating_point and b.is_floating_point and b.itemsize > a.itemsize


def last_dim_reduction(n: Node) -> bool:
    """A reduction over exactly the last dimension of its input."""
    if n.op not in REDUCTIONS or not n.inputs:
        return False
    rank = n.args[0].type.rank
    if rank == 0:
        return False
    if n.op in ("_softmax", "_log_softmax"):
        return n.args[1] % rank == rank - 1
    dims = n.args[1] if len(n.args) > 1 else n.attr("dim")
    if dims is None:
        return False
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return len(dims) == 1 and dims[0] % rank == rank - 1


class _Partitioner:
    def __init__(self, graph: Graph, config: FuseConfig):
        self.g = graph
        self.cfg = config
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.group_of: dict[Node, int] = {}
        self.groups: list[tuple[set, str]] = []
        self.outputs = {v.node for v in graph.outputs}

    # --- legality ------------------------------------------------------------
    def convex(self, s: set) -> bool:
        """No path leaves ``s`` and comes back (other groups count as one node)."""
        hi = max(self.pos[x] for x in s)
        stack = [u for x in s for u in self.users[x] if u not in s and self.pos[u] < hi]
        seen: set = set()
        while stack:
            y = stack.pop()
            if y in seen:
                continue
            seen.add(y)
            gi = self.group_of.get(y)
            members = self.groups[gi][0] if gi is not None else (y,)
            for m in members:
                seen.add(m)
                for z in self.users[m]:
                    if z in s:
                        return False
                    if self.pos[z] < hi and z not in seen:
                        stack.append(z)
        return True

    def free(self, n: Node, s: set) -> bool:
        return n not in s and n not in self.group_of

    def external_users(self, n: Node, s: set) -> bool:
        return n in self.outputs or any(u not in s for u in self.users[n])

    # --- growth --------------------------------------------------------------
    def grow(self, s: set, accept_producer, accept_consumer) -> set:
        changed = True
        while changed and len(s) < self.cfg.max_nodes:
            changed = False
            frontier = sorted({v.node for x in s for v in x.inputs} | {u for x in s for u in self.users[x]},
                              key=self.pos.get)
            for m in frontier:
                if not self.free(m, s):
                    continue
                is_prod = any(v.node is m for x in s for v in x.inputs)
                ok = accept_producer(m, s) if is_prod else accept_consumer(m, s)
                if ok and self.convex(s | {m}):
                    s.add(m)
                    changed = True
        return s

    def prune_boundary_views(self, s: set) -> set:
        """Views whose operands all come from outside (input views) or whose
        users are all outside (output views) stay outside the group."""
        changed = True
        while changed:
            changed = False
            for m in list(s):
                if m.op not in VIEWS:
                    continue
                ins_outside = all(v.node not in s for v in m.inputs)
                users_outside = all(u not in s for u in self.users[m])
                if ins_outside or users_outside:
                    s.discard(m)
                    changed = True
        return s

    def prune_widening_outputs(self, s: set) -> set:
        """A widening cast whose result only leaves the group for ops that fuse
        (a norm upcasting the residual sum) stays outside: the group then writes
        the narrow value and the consumer's group casts it on load, instead of
        the GEMM writing (and the norm reading) twice the bytes."""
        changed = True
        while changed:
            changed = False
            for m in list(s):
                if not is_widening_cast(m) or m in self.outputs or any(u in s for u in self.users[m]):
                    continue
                if all(is_pointwise(u) or is_layout(u) or last_dim_reduction(u) for u in self.users[m]):
                    s.discard(m)
                    changed = True
        return s

    def commit(self, s: set, kind: str) -> bool:
        nodes = [n for n in self.g.nodes if n in s]
        if not nodes or not self.convex(s):
            return False
        _, sub, _ = subgraph_of(self.g, nodes, kind)
        if not self.cfg.check(kind, sub):
            return False
        gi = len(self.groups)
        self.groups.append((set(s), kind))
        for n in s:
            self.group_of[n] = gi
        return True

    # --- the three kinds -----------------------------------------------------
    def gemm_groups(self) -> None:
        for n in self.g.nodes:
            if n.op not in GEMMS or n in self.group_of:
                continue
            total = _numel(n.type)

            def consumer(m, s, total=total):
                if not (is_pointwise(m) or m.op in ("reshape", "slice")):
                    return False
                if self.users[m] and all(last_dim_reduction(u) for u in self.users[m]):
                    return False  # only a reduction's prologue: it belongs to that group
                if not _le(_numel(m.type), total):
                    return False
                return all(v.node in s or _le(_numel(v.type), total) for v in m.inputs)

            s = self.grow({n}, lambda m, s: False, consumer)
            s = self.prune_boundary_views(self.prune_widening_outputs(s | {n})) | {n}
            prologue = self.row_scale_prologue(n, s)
            if prologue and self.commit(s | prologue, "gemm"):
                continue
            # NOTE: a GEMM with no epilogue is a group too: its generated kernel
            # competes with the library call by measurement (on the CPU, TVM's
            # GEMM beat MKL at GPT-2's shapes, LM head included).
            self._commit_shrinking(s, "gemm", anchor=n)

    def row_scale_prologue(self, gemm: Node, s: set) -> set:
        """The nodes computing the GEMM's A operand that nothing else reads, when they
        hold one last-dim sum or mean (a norm) and A has at most PROLOGUE_MAX_ROWS
        static rows; empty otherwise. Whether the form factors out is the code
        generator's call (the group is committed only if it accepts)."""
        if gemm.op == "bmm":
            return set()
        a = gemm.args[1] if gemm.op == "addmm" else gemm.args[0]
        rows = a.type.shape[0] if a.type.rank == 2 else None
        if not isinstance(rows, int) or rows > PROLOGUE_MAX_ROWS:
            return set()

        def eligible(m: Node) -> bool:
            return self.free(m, s) and m not in self.outputs and (
                is_pointwise(m) or is_layout(m) or (last_dim_reduction(m) and m.op in ("sum", "mean")))

        found, stack = set(), [a.node]
        while stack:
            m = stack.pop()
            if m not in found and eligible(m):
                found.add(m)
                stack.extend(v.node for v in m.inputs)
        while True:   # drop what is read outside, and what then no longer feeds A through the rest
            keep = {m for m in found if all(u in found or u in s for u in self.users[m])}
            reach, stack = set(), [a.node] if a.node in keep else []
            while stack:
                m = stack.pop()
                if m not in reach:
                    reach.add(m)
                    stack.extend(v.node for v in m.inputs if v.node in keep)
            if reach == found:
                break
            found = reach
        if sum(last_dim_reduction(m) for m in found) != 1:
            return set()
        return found

    def reduction_groups(self) -> None:
        for r in self.g.nodes:
            if not last_dim_reduction(r) or r in self.group_of:
                continue
            row = r.args[0].type
            row_numel = _numel(row)

            def producer(m, s, row_numel=row_numel):
                if not (is_pointwise(m) or is_layout(m)):
                    return False
                if _eq(_numel(m.type), row_numel):
                    return True
                return not self.external_users(m, s | {m}) and _le(_numel(m.type), row_numel)

            def consumer(m, s, row=row, row_numel=row_numel):
                if last_dim_reduction(m):
                    return _eq(_numel(m.args[0].type), row_numel) and m.args[0].type.shape[-1] == row.shape[-1]
                if not (is_pointwise(m) or is_layout(m)):
                    return False
                return _le(_numel(m.type), row_numel) and all(
                    v.node in s or _le(_numel(v.type), row_numel) for v in m.inputs)

            s = self.grow({r}, producer, consumer)
            s = self.prune_boundary_views(s)
            if r in s:
                self._commit_shrinking(s, "reduction", anchor=r)

    def scatter_stores(self) -> None:
        """``unpack`` (padding elimination) of a gemm or reduction group's value joins
        that group, with the reshapes between them: the kernel stores each packed
        row at its padded position instead of writing the packed value for a
        separate scatter to read again (the encoder's final norm, the LM head)."""
        for n in self.g.nodes:
            if n.op != "unpack" or n in self.group_of:
                continue
            chain, v = [n], n.args[0]
            while v.node.op == "reshape" and v.node not in self.group_of and len(self.users[v.node]) == 1:
                chain.append(v.node)
                v = v.node.args[0]
            gi = self.group_of.get(v.node)
            if gi is None or self.groups[gi][1] not in ("gemm", "reduction"):
                continue
            members, kind = self.groups[gi]
            s = members | set(chain)
            nodes = [m for m in self.g.nodes if m in s]
            if not self.convex(s) or not self.cfg.check(kind, subgraph_of(self.g, nodes, kind)[1]):
                continue
            self.groups[gi] = (s, kind)
            for m in chain:
                self.group_of[m] = gi

    def pointwise_groups(self) -> None:
        for n in self.g.nodes:
            if not is_pointwise(n) or n in self.group_of:
                continue
            dom = _numel(n.type)

            def producer(m, s, dom=dom):
                if not (is_pointwise(m) or is_layout(m)):
                    return False
                if _eq(_numel(m.type), dom):
                    return True
                return not self.external_users(m, s | {m}) and _le(_numel(m.type), dom)

            def consumer(m, s, dom=dom):
                return (is_pointwise(m) or is_layout(m)) and _eq(_numel(m.type), dom)

            s = self.prune_boundary_views(self.grow({n}, producer, consumer))
            work = [m for m in s if m.op not in VIEWS]
            if len(work) < 2 and not any(m.op == "cat" for m in s):
                continue
            outs = {tuple(m.types[0].shape) for m in s if self.external_users(m, s)}
            if len(outs) > 1:
                continue  # outputs of several shapes: not one iteration domain
            self._commit_shrinking(s, "pointwise", anchor=n)

    def _commit_shrinking(self, s: set, kind: str, anchor: Node) -> None:
        """Commit ``s``; if no backend takes it, drop members farthest (in
        topological order) from the anchor until one does or nothing is left."""
        s = set(s)
        while s and anchor in s:
            if self.commit(s, kind):
                return
            if len(s) == 1:
                return
            far = max((m for m in s if m is not anchor), key=lambda m: abs(self.pos[m] - self.pos[anchor]))
            s.discard(far)
            s = self.prune_boundary_views(s) | ({anchor} if kind == "gemm" else set())

    def run(self) -> list[tuple[list[Node], str]]:
        self.gemm_groups()
        self.reduction_groups()
        self.scatter_stores()
        self.pointwise_groups()
        return [([n for n in self.g.nodes if n in s], kind) for s, kind in self.groups]


def _eq(a, b) -> bool:
    return dims_equal(a, b)


def _le(a, b) -> bool:
    """a <= b for sizes; with symbols, checked at every symbol = 2 and = 4096
    (sizes here are products and sums of dimensions, monotonic in them).
    Only fusion choices depend on it, never correctness."""
    if isinstance(a, int) and isinstance(b, int):
        return a <= b

    names = dim_symbols(a) | dim_symbols(b)
    return all(eval_dim(a, env) <= eval_dim(b, env) for env in ({s: 2 for s in names}, {s: 4096 for s in names}))


def fuse_graph(graph: Graph, config: FuseConfig) -> Graph:
    groups = [(nodes, kind) for nodes, kind in _Partitioner(graph, config).run() if _self_contained(graph, nodes)]
    return fuse_groups(graph, groups) if groups else graph


def _self_contained(graph: Graph, nodes) -> bool:
    """The group's kernel can learn every symbol it uses from its operands
    (a SymInt argument of the model may not be any operand's dimension)."""
    _, sub, _ = subgraph_of(graph, nodes)
    missing = unbound_symbols(sub)
    if missing:
        log.debug("fuse: a %d-node group stays unfused: symbols %s are no operand's dimension",
                  len(nodes), ", ".join(sorted(map(str, missing))))
    return not missing


def fuse(graph: Graph, ctx=None) -> Graph:
    """The pipeline entry: groups that some backend the options allow accepts
    (``ctx.supports``, wired by the driver to the code generators' checkers)."""
    ctx = PassContext.of(ctx)
    if not ctx.option("fuse", True) or ctx.option("backend", "auto") == "torch":
        return graph
    return fuse_graph(graph, FuseConfig(ctx.supports))


__all__ = ["fuse", "fuse_graph", "FuseConfig", "Optional"]

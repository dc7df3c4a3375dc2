"""Parse the text form written by ``ir/printer.py`` back into a Graph.

Operand lists are parsed with Python's ``ast`` after ``%name`` and ``@name``
references are turned into identifiers; bare identifiers and arithmetic on
them become symbolic dimensions.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Mapping, Optional

import torch

from braze.ir.graph import Graph, Node, Value
from braze.ir.types import DTYPES_BY_NAME, Sym, TensorType, sym


class ParseError(ValueError):
    pass


_HEADER = re.compile(r"^graph\s+(\w+)\((.*)\{$")
_TAIL = re.compile(r"^\s*(?:syms\(([^)]*)\))?\s*(?:bounds\((.*)\))?\s*$")


class _Header:
    """name, params, syms, bounds of ``graph NAME(PARAMS) [syms(..)] [bounds(..)] {``."""

    def __init__(self, line: str):
        m = _HEADER.match(line)
        if not m:
            raise ParseError(f"expected 'graph NAME(...) {{', got {line!r}")
        rest, depth = m.group(2), 1
        for k, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                break
        else:
            raise ParseError(f"unbalanced parentheses in {line!r}")
        tail = _TAIL.match(rest[k + 1:])
        if not tail:
            raise ParseError(f"cannot parse {rest[k + 1:]!r} in {line!r}")
        self.parts = (m.group(1), rest[:k], tail.group(1), tail.group(2))

    def group(self, i: int):
        return self.parts[i - 1]
_NODE = re.compile(r"^(%\w+(?:\s*,\s*%\w+)*)\s*=\s*([\w:]+)(?:\.(\w+))?\((.*)\)\s*:\s*(.+)$")
_TYPE = re.compile(r"^(\w+)\[(.*)\](?:@([\w:]+))?$")
_REF = re.compile(r"%(\w+)")
_GREF = re.compile(r"@(\w+)")


def parse_type(text: str) -> TensorType:
    m = _TYPE.match(text.strip())
    if not m:
        raise ParseError(f"bad type {text!r}")
    dtype = DTYPES_BY_NAME.get(m.group(1))
    if dtype is None:
        raise ParseError(f"unknown dtype {m.group(1)!r} in {text!r}")
    dims = _split_top(m.group(2)) if m.group(2).strip() else []
    return TensorType(tuple(sym(d.strip()) if not d.strip().lstrip("-").isdigit() else int(d) for d in dims),
                      dtype, m.group(3) or "cpu")


def _split_top(text: str) -> list[str]:
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return out


def parse_graph(text: str, constants: Optional[Mapping[str, torch.Tensor]] = None) -> Graph:
    """Parse one or more ``graph`` blocks; the first is returned, the others
    are the subgraphs it references with ``@name``."""
    blocks = _blocks(text)
    if not blocks:
        raise ParseError("no graph block found")
    parsed: dict[str, Graph] = {}
    # Subgraphs come after their users: parse in reverse so references resolve.
    for name, header, body in reversed(blocks):
        parsed[name] = _parse_block(name, header, body, parsed, constants or {})
    return parsed[blocks[0][0]]


def _blocks(text: str):
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    blocks, i = [], 0
    while i < len(lines):
        try:
            m = _Header(lines[i])
        except ParseError as e:
            raise ParseError(f"line {i + 1}: {e}") from None
        body = []
        i += 1
        while i < len(lines) and lines[i] != "}":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ParseError(f"graph {m.group(1)}: missing closing '}}'")
        i += 1
        blocks.append((m.group(1), m, body))
    return blocks


def _parse_block(name, header, body, subgraphs, constants) -> Graph:
    env: dict[str, Value] = {}
    nodes: list[Node] = []
    inputs: list[Node] = []
    for param in _split_top(header.group(2)):
        pname, _, ptype = param.partition(":")
        pname = pname.strip().lstrip("%")
        n = Node("input", (pname,), types=(parse_type(ptype),), name=pname)
        inputs.append(n)
        nodes.append(n)
        env[pname] = n.out()
    sym_inputs = tuple(s.strip() for s in (header.group(3) or "").split(",") if s.strip())
    bounds = tuple((b.split("<=")[0].strip(), sym(b.split("<=")[1].strip())) for b in _split_top(header.group(4) or "")
                   if b.strip())
    outputs: tuple = ()
    used_consts: dict[str, torch.Tensor] = {}
    writes: list[tuple[int, int]] = []
    for ln in body:
        if ln.startswith("writes "):
            for pair in ln[len("writes "):].split(","):
                i, _, j = pair.partition("<-")
                writes.append((int(i), int(j)))
            continue
        if ln.startswith("return"):
            rest = ln[len("return"):].strip()
            outputs = tuple(_parse_args(rest, env, subgraphs)[0]) if rest else ()
            continue
        m = _NODE.match(ln)
        if not m:
            raise ParseError(f"graph {name}: cannot parse {ln!r}")
        lhs = [s.strip().lstrip("%") for s in m.group(1).split(",")]
        op, overload, argtext, typetext = m.group(2), m.group(3) or "", m.group(4), m.group(5)
        args, kwargs = _parse_args(argtext, env, subgraphs)
        types = tuple(parse_type(t) for t in _split_top(typetext))
        if len(types) != len(lhs):
            raise ParseError(f"graph {name}: {len(lhs)} names but {len(types)} types in {ln!r}")
        n = Node(op, tuple(args), tuple(kwargs.items()), types, overload=overload,
                 name=lhs[0] if len(lhs) == 1 else "")
        if op == "constant":
            key = args[0]
            if key in constants:
                used_consts[key] = constants[key]
        nodes.append(n)
        for i, nm in enumerate(lhs):
            env[nm] = Value(n, i)
    return Graph(tuple(nodes), tuple(inputs), outputs, used_consts, sym_inputs, name, bounds, tuple(writes))


def _parse_args(text: str, env: dict[str, Value], subgraphs: dict[str, Graph]):
    src = _GREF.sub(lambda m: f"__g_{m.group(1)}", _REF.sub(lambda m: f"__v_{m.group(1)}", text))
    try:
        call = ast.parse(f"f({src})", mode="eval").body
    except SyntaxError as e:
        raise ParseError(f"cannot parse operands {text!r}: {e}") from None
    conv = _Converter(env, subgraphs)
    args = [conv.visit(a) for a in call.args]
    kwargs = {k.arg: conv.visit(k.value) for k in call.keywords}
    return args, kwargs


class _Converter:
    def __init__(self, env, subgraphs):
        self.env, self.subgraphs = env, subgraphs

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return tuple(self.visit(e) for e in node.elts)
        if isinstance(node, ast.Name):
            if node.id.startswith("__v_"):
                key = node.id[4:]
                if key not in self.env:
                    raise ParseError(f"%{key} is used before it is defined")
                return self.env[key]
            if node.id.startswith("__g_"):
                key = node.id[4:]
                if key not in self.subgraphs:
                    raise ParseError(f"@{key} names no graph block")
                return self.subgraphs[key]
            return sym(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self.visit(node.operand)
            return -v if isinstance(v, (int, float)) else sym(f"-({v})")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
            val = getattr(torch, node.attr, None)
            if isinstance(val, (torch.dtype, torch.layout, torch.memory_format)):
                return val
            raise ParseError(f"unknown torch.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self.visit(a) for a in node.args]
            if node.func.id == "device":
                return torch.device(*args)
            if node.func.id == "float":
                return float(*args)
        if isinstance(node, (ast.BinOp, ast.Call)):
            return sym(ast.unparse(node))
        raise ParseError(f"cannot parse operand {ast.unparse(node)!r}")

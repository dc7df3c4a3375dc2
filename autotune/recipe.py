"""Rebuilding a kernel in another process, from data only.

Candidates are measured in worker processes (``autotune/worker.py``) and
tuned by several processes at once (``autotune/distributed.py``); kernels are
never pickled. What crosses the process boundary is a *recipe*, plain JSON:

- ``ir``: the text of a one-node graph holding the node the kernel
  implements (``braze.ir.print_graph``; its operands become graph inputs, so
  it needs no constants),
- ``key``/``name``: the kernel's structural key and name,
- ``generators``: the code generators to run, as ``module:qualname``
  (importing the module is enough to rebuild a generator, including ones
  registered by tests or plugins),
- ``backend``: the ``backend`` option the generators see.

The receiving side parses the IR, runs the generators on the node and picks
the candidate with the same key (or the library kernel), so a rebuilt kernel
is the same code the parent would have run.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
from typing import Any, Callable, Optional, Sequence

from braze.autotune import contract
from braze.autotune.contract import (LibraryKernel, backend_allows, canonical_ir,  # noqa: F401
                                     load_generators, node_graph)
from braze.ir import Graph, Node, parse_graph, print_graph
from braze.ir.decline import Decline
from braze.ir.interpreter import is_strided_view
from braze.autotune.options import Options
from braze.autotune.space import device_info


log = logging.getLogger("braze.autotune.recipe")


class RecipeError(RuntimeError):
    """A recipe cannot be turned back into its kernel."""


def the_node(graph: Graph) -> Node:
    """The kernel's node: the last compute node; any before it are its operands' views."""
    nodes = graph.compute_nodes
    if not nodes or any(not is_strided_view(n) for n in nodes[:-1]) or graph.outputs[0].node is not nodes[-1]:
        raise RecipeError(f"a kernel recipe's graph has {len(nodes)} compute nodes, expected one and its "
                          f"operands' views")
    return nodes[-1]


def generator_ref(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(ref: str) -> Callable:
    """``module:qualname`` -> the object (imports the module)."""
    mod, _, qual = ref.partition(":")
    if not mod or not qual:
        raise RecipeError(f"{ref!r} is not of the form module:qualname")
    try:
        obj: Any = importlib.import_module(mod)
    except ImportError as e:
        raise RecipeError(f"cannot import {mod} (for {ref}): {e}") from None
    for part in qual.split("."):
        if part == "<locals>" or not hasattr(obj, part):
            raise RecipeError(f"{ref} cannot be found by name (a local function cannot cross processes)")
        obj = getattr(obj, part)
    return obj


def current_generators(backend: str = "auto") -> list[str]:
    """The registered generators (as refs) that ``backend`` allows, in order."""
    load_generators()
    return [generator_ref(fn) for name, fn in contract.GENERATORS if backend_allows(backend, name)]


def make_recipe(kernel, node: Node, options, generators: Optional[Sequence[str]] = None,
                index: Optional[int] = None) -> dict[str, Any]:
    """The recipe of one candidate of ``node`` (``index``: its position among
    the node's candidates, the fallback when its key cannot be matched)."""
    return {
        "ir": print_graph(node_graph(node, views=True)),
        "key": kernel.key(),
        "family": family_key(kernel, node),
        "name": kernel.name,
        "backend": kernel.backend,
        "knobs": list(kernel.space.names),
        "index": index,
        "backend_option": getattr(options, "backend", "auto"),
        "generators": list(generators if generators is not None else current_generators(
            getattr(options, "backend", "auto"))),
    }


def family_key(kernel, node: Node) -> str:
    """A key shared by the kernels of one template and structure at any shape.

    ``Kernel.key()`` tells static shapes apart (code specialised to a shape
    is another kernel); the nearest-bucket lookup of the tuning database
    needs what stays when shapes change: the kernel's name and backend and
    the node's IR with every number blanked.
    """
    import re

    text = re.sub(r"\d+", "#", canonical_ir(print_graph(node_graph(node))))
    return hashlib.sha256(f"{kernel.name}|{kernel.backend}|{text}".encode()).hexdigest()[:20]


def recipe_digest(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def candidates_for_node(node: Node, graph: Graph, options, device, generators: Sequence[str]) -> list:
    """The candidates the given generators produce for ``node``, plus the
    library kernel last (as ``compiler.kernels.kernels_for`` builds them)."""
    cands: list = []
    for ref in generators:
        fn = resolve(ref)
        got = fn(node, graph, options, device)
        if not isinstance(got, Decline):
            cands.extend(got or ())
    cands.append(LibraryKernel(node))
    return cands


def rebuild(recipe: dict[str, Any], device=None) -> tuple[Any, Node]:
    """(kernel, node) from a recipe; raises RecipeError when no generator
    produces a kernel with the recipe's key any more."""
    try:
        graph = parse_graph(recipe["ir"])
    except Exception as e:  # noqa: BLE001
        raise RecipeError(f"kernel IR does not parse: {e}") from None
    node = the_node(graph)
    if device is None:
        device = device_info(_device_of(node))
    options = Options(backend=recipe.get("backend_option", "auto"))
    cands = candidates_for_node(node, graph, options, device, recipe.get("generators", ()))
    for k in cands:
        if k.key() == recipe["key"]:
            return k, node
    k = same_position(cands, recipe.get("index"), recipe.get("backend"), recipe.get("knobs"))
    if k is not None:
        log.info("rebuilt %s by its position (key %s here, %s there)", recipe.get("name"), k.key(), recipe["key"])
        return k, node
    raise RecipeError(f"no generator rebuilds kernel {recipe.get('name')} (key {recipe['key']}) from its IR; "
                      f"generators: {', '.join(recipe.get('generators', ())) or 'none'}")


def same_position(cands: Sequence, index: Optional[int], backend: Optional[str], knobs) -> Any:
    """The candidate at ``index`` if it is of the same backend and has the same knobs.

    NOTE: a generator whose output text depends on what it generated before
    (e.g. a memo that keeps the first name it saw) gives the same kernel a
    different key in another process; its position among the node's
    candidates still identifies it.
    """
    if index is None or not 0 <= index < len(cands):
        return None
    k = cands[index]
    if k.backend != backend or list(k.space.names) != list(knobs or ()):
        return None
    return k


def _device_of(node: Node) -> str:
    for t in tuple(v.type for v in node.inputs) + node.types:
        if t.device.startswith("cuda"):
            return "cuda"
    return "cpu"


__all__ = ["node_graph", "make_recipe", "family_key", "rebuild", "candidates_for_node", "current_generators", "RecipeError",
           "resolve", "generator_ref", "recipe_digest"]

"""Compiled artifacts: a model compiled ahead of time (``compile_model``) and
loaded again (``load_artifact``) to run without tuning. The file format and its
checks are ``compiler/artifact_format.py``.

Loading parses the IR, loads the tensors, runs the code generators again on
the graph and takes, for each kernel, the candidate and config the manifest
names; no search and no database lookup happens unless a recorded choice
cannot be used. A CUDA artifact on a machine without CUDA is refused. An
artifact tuned on another device is loaded with its choices dropped and
re-selected here (tuning database, else measured defaults, or a search with
``retune=True``), which is logged.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Mapping, Optional

import torch
import torch.utils._pytree as pytree

from braze.compiler.artifact_format import (FORMAT, FORMAT_VERSION, Artifact, ArtifactError,  # noqa: F401
                                            _dumps_spec, _jsonable, _load_constants, _loads_spec,
                                            _manifest_digest, _same_release, _save_constants, _sha,
                                            kwarg_order, read_files, read_manifest, versions, write_files)
from braze.autotune.contract import Choice
from braze.autotune.options import Options
from braze.passes import check_disable
from braze.autotune.recipe import same_position
from braze.autotune.space import device_info
from braze.compiler.capture import capture_export
from braze.compiler.driver import build_launchers, compile_graph
from braze.compiler.eager_check import compare_outputs, policy_for
from braze.compiler.kernels import _load_generators, target_device
from braze.compiler.lower import lower
from braze.compiler.report import GraphReport
from braze.compiler.runtime import CompiledProgram
from braze.ir import DTYPE_NAMES, parse_graph, print_graph, verify
from braze.ir.interpreter import bind_symbols

log = logging.getLogger("braze.artifact")


# --- compiling -------------------------------------------------------------------------
def _leaf_names(args: tuple, kwargs: Mapping[str, Any]) -> list[str]:
    names = []
    for path, _ in pytree.tree_flatten_with_path((args, kwargs))[0]:
        head, rest = path[0], path[1:]
        if getattr(head, "idx", 0) == 1 and rest and hasattr(rest[0], "key"):
            names.append(str(rest[0].key) + pytree.keystr(rest[1:]))
        else:
            names.append("args" + pytree.keystr(rest))
    return names


def compile_model(model: torch.nn.Module, args: tuple = (), kwargs: Optional[Mapping[str, Any]] = None,
                  options=None, check: bool = True, name: Optional[str] = None) -> Artifact:
    """Capture ``model`` with torch.export on (args, kwargs), compile it, choose
    its kernels (tuning database, search with ``options.tune``, or defaults),
    check it against eager on the example and return the :class:`Artifact`."""
    options = options or Options()
    check_disable(options)
    if options.cuda_graphs:
        # NOTE: an artifact holds one plain program (load_artifact rebuilds it so);
        # compiling a CUDA-graph program here crashed on padding-eliminated graphs.
        log.info("braze: artifacts run without CUDA graphs; cuda_graphs ignored")
        options = options.replace(cuda_graphs=False)
    kwargs = dict(kwargs or {})
    args = tuple(args)
    with _without_kv_cache(model, kwargs):
        return _compile_model(model, args, kwargs, options, check, name)


@contextlib.contextmanager
def _without_kv_cache(model: torch.nn.Module, kwargs: Mapping[str, Any]):
    """A Hugging Face model configured to return its KV cache (``config.use_cache``), exported
    as a pure function with ``use_cache=False``: a cache object is no tensor an artifact can
    return (the caller's own ``use_cache=`` wins)."""
    cfg = getattr(model, "config", None)
    if "use_cache" in kwargs or not getattr(cfg, "use_cache", False):
        yield
        return
    cfg.use_cache = False
    try:
        yield
    finally:
        cfg.use_cache = True


def _compile_model(model, args: tuple, kwargs: dict, options, check: bool, name: Optional[str]) -> Artifact:
    from torch.export.graph_signature import InputKind, OutputKind

    t0 = time.perf_counter()
    cap, ep = capture_export(model, args, kwargs)
    sig = ep.graph_signature
    mutated = [str(s.target or s.arg) for s in sig.output_specs if s.kind != OutputKind.USER_OUTPUT]
    if mutated:
        raise ArtifactError(f"the model mutates state during forward ({', '.join(mutated[:4])}); an artifact holds "
                            "a pure inference function")
    graph, spec = lower(cap.gm, cap.placeholders, name=name or _ident(type(model).__name__))
    report = GraphReport(graph.name)
    program = compile_graph(graph, options, report)
    in_spec = ep.call_spec.in_spec
    kw_order = kwarg_order(in_spec)
    kwargs = {k: kwargs[k] for k in (kw_order if kw_order is not None else list(kwargs)) if k in kwargs}
    leaves = pytree.tree_leaves((args, kwargs))
    user_pos = [i for i, s in enumerate(sig.input_specs) if s.kind == InputKind.USER_INPUT]
    if len(user_pos) != len(leaves):
        raise ArtifactError(f"the exported program takes {len(user_pos)} user inputs for {len(leaves)} argument "
                            "leaves; cannot map the calling convention")
    leaf_of = {p: j for j, p in enumerate(user_pos)}
    value_leaves = {str(leaf_of[i]): _jsonable(p.value) for i, p in enumerate(cap.placeholders)
                    if p.kind == "value" and i in leaf_of}
    input_leaves = [leaf_of[p] for p in spec.inputs]
    inputs = []
    for n, li in zip(graph.inputs, input_leaves):
        x = leaves[li]
        d = {"leaf": li, "name": n.args[0], "shape": list(x.shape), "dtype": DTYPE_NAMES[x.dtype],
             "device": str(x.device)}
        if not x.is_floating_point() and x.dtype != torch.bool and x.numel():
            d["low"], d["high"] = int(x.min()), int(x.max())
        inputs.append(d)
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": time.time(), "versions": versions(),
        "name": graph.name, "options": {"backend": options.backend, "fuse": options.fuse, "tune": options.tune},
        "n_leaves": len(leaves), "leaf_names": _leaf_names(args, kwargs), "input_leaves": input_leaves,
        "sym_leaves": [leaf_of[p] for p in spec.syms], "value_leaves": value_leaves,
        "out_leaves": [[k, _jsonable(x)] for k, x in spec.leaves], "inputs": inputs,
        "in_spec": pytree.treespec_dumps(in_spec), "out_spec": _dumps_spec(ep.call_spec.out_spec),
    }

    manifest["env"] = bind_symbols(graph, [leaves[i] for i in input_leaves],
                                   [int(leaves[leaf_of[p]]) for p in spec.syms])
    art = Artifact(program, manifest, {}, in_spec, ep.call_spec.out_spec)
    with torch.no_grad():
        if hasattr(program, "dense"):
            # NOTE: the packed graph reads fixed positions in the padded layout (a pooler's
            # token 0), valid only for some paddings; a loaded artifact is one plain program
            # with no fallback, so it holds the graph without padding elimination, which runs
            # every padding.
            program = program.dense()
            report = program.report or report
            art = Artifact(program, manifest, {}, in_spec, ep.call_spec.out_spec)
        got = art(*args, **kwargs)
        if check:
            want = model(*args, **kwargs)
    if check:
        by_name = {d["name"]: leaves[d["leaf"]] for d in manifest["inputs"]}
        names = [n.args[0] for n in program.graph.inputs]
        policy = policy_for(program.graph, names, [by_name.get(nm) for nm in names], manifest["out_leaves"])
        res = compare_outputs(got, want, policy)
        if res.problem:
            raise ArtifactError(f"braze's compiled {graph.name} does not match eager on the example inputs: "
                                f"{res.problem}; no artifact written (a bug in braze: please report it)")
        manifest["check"] = res.manifest()
    dev = device_info(target_device(program.graph))
    manifest["device"] = {"kind": dev.kind, "name": dev.name, "capability": list(dev.capability),
                          "sm_count": dev.sm_count, "cores": dev.cores, "key": dev.key}
    files: dict[str, bytes] = {"graph.ir": print_graph(program.graph).encode(),
                               "input.ir": print_graph(graph).encode()}
    manifest["kernels"] = _choices(program, files)
    manifest["compile_s"] = time.perf_counter() - t0
    art.files = files

    def finish(constants=program.graph.constants):
        consts, aliases = _save_constants(constants)
        files["constants.safetensors"] = consts
        manifest["constant_aliases"] = aliases
        manifest["files"] = {n: _sha(b) for n, b in sorted(files.items())}
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True).encode()
    art.finish = finish
    program.report = report
    return art


def _ident(s: str) -> str:
    import re

    return re.sub(r"\W+", "_", s) or "model"


def _choices(program, files: dict[str, bytes]) -> list[dict]:
    import re

    out = []
    # NOTE: nodes are numbered without the inputs: the printer puts inputs in
    # the header, so a parsed graph lists them first wherever they were.
    index = {n: i for i, n in enumerate(_body(program.graph))}
    for node, launcher in program.launchers.items():
        for pkey, ch in launcher.choices.items():
            k = ch.kernel
            entry = {"node": index[node], "node_name": node.name, "problem_key": pkey, "kernel": k.name,
                     "key": k.key(), "backend": k.backend, "knobs": list(k.space.names),
                     "candidate": next((i for i, c in enumerate(launcher.candidates) if c is k), None), "config": {a: _jsonable(b) for a, b in ch.config.items()},
                     "source": ch.source, "source_sha256": _sha(k.source.encode()) if k.source else ""}
            if k.source:
                fname = f"kernels/{index[node]:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', k.name)[:80]}.txt"
                files[fname] = k.source.encode()
                entry["source_file"] = fname
            out.append(entry)
    return sorted(out, key=lambda e: e["node"])


def _body(graph) -> list:
    return [n for n in graph.nodes if n.op != "input"]


# --- loading ------------------------------------------------------------------------
def load_artifact(path: str, options=None, retune: bool = False) -> Artifact:
    """Load an artifact and make it runnable, without tuning (see the module doc)."""
    from dataclasses import replace

    files = read_files(path)
    manifest = read_manifest(path, files)
    options = options or Options()
    dev_rec = manifest["device"]
    if dev_rec["kind"] == "cuda" and not torch.cuda.is_available():
        raise ArtifactError(f"{path} was compiled for a CUDA GPU ({dev_rec['name']}); this machine has none")
    here = device_info("cuda" if dev_rec["kind"] == "cuda" else "cpu")
    keep_choices = here.key == dev_rec["key"] and not retune
    if here.key != dev_rec["key"]:
        log.warning("braze: %s was tuned on %s; this is %s: its kernel choices are not used here and are %s",
                    path, dev_rec["key"], here.key, "tuned again" if retune else
                    "re-selected (tuning database, else measured defaults; `braze.load(..., retune=True)` or "
                    "`braze compile --tune` to tune)")
    if retune:
        options = options.replace(tune=True)

    _load_generators()  # codegen packages register the ops they run (attention_varlen) before parsing
    try:
        graph = parse_graph(files["graph.ir"].decode())
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path}: graph.ir does not parse with this braze ({e})") from None
    devices = {n.args[0]: n.type.device for n in graph.nodes if n.op == "constant"}
    consts = _load_constants(files["constants.safetensors"], manifest.get("constant_aliases", {}), devices)
    missing = sorted(set(devices) - set(consts))
    if missing:
        raise ArtifactError(f"{path}: constants {', '.join(missing[:5])} are missing from constants.safetensors")
    graph = replace(graph, constants=consts)
    try:
        verify(graph)
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path}: graph.ir does not verify with this braze ({e})") from None
    report = GraphReport(graph.name)
    launchers = build_launchers(graph, options, report)
    if keep_choices:
        _apply_choices(path, graph, launchers, manifest["kernels"], manifest.get("env", {}))
    program = CompiledProgram(graph, launchers, report)
    return Artifact(program, manifest, files, pytree.treespec_loads(manifest["in_spec"]),
                    _loads_spec(manifest.get("out_spec")))


def _valid(kernel, config, env, device) -> bool:
    try:
        return kernel.space.valid(kernel.space.normalize(config), kernel.problem(env), device)
    except Exception:  # noqa: BLE001 - a space that cannot judge this: the generator will say at compile
        return True


def _apply_choices(path: str, graph, launchers, kernels: list[dict], env: Mapping[str, int]) -> None:
    body = _body(graph)
    for e in kernels:
        node = body[e["node"]] if e["node"] < len(body) else None
        launcher = launchers.get(node) if node is not None else None
        if launcher is None:
            log.warning("braze: %s: no code generator here produces kernels for %s (chosen: %s, %s); it runs "
                        "through its reference implementation", path, e["node_name"], e["kernel"], e["backend"])
            continue

        cand = next((k for k in launcher.candidates if k.key() == e["key"]), None)
        by_position = False
        if cand is None:
            cand = same_position(launcher.candidates, e.get("candidate"), e["backend"], e.get("knobs"))
            by_position = cand is not None
        if cand is None:
            log.warning("braze: %s: kernel %s of %s is not generated here; re-selecting", path, e["kernel"],
                        e["node_name"])
            continue
        if by_position:
            log.info("braze: %s: kernel %s of %s found by its position (its generator names it %s here)", path,
                     e["kernel"], e["node_name"], cand.name)
        elif e["source_sha256"] and _sha(cand.source.encode()) != e["source_sha256"]:
            log.warning("braze: %s: the generator of %s now writes different code than when the artifact was built; "
                        "re-selecting its config", path, e["kernel"])
            continue
        config = cand.space.coerce(e["config"])
        if not _valid(cand, config, env, launcher.device):
            log.warning("braze: %s: the recorded config of %s is not valid here; re-selecting", path, e["kernel"])
            continue
        launcher.choices[e["problem_key"]] = Choice(cand, config, "artifact")

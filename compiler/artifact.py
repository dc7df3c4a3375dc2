"""Compiled artifacts: a model compiled ahead of time, saved, and run later without tuning.

An artifact is a directory (or the same files in a ``.zip``)::

    manifest.json          what it is: versions, device, inputs, outputs, kernel choices, file hashes
    graph.ir               the optimised braze IR that runs (text, ``braze.ir.print_graph``)
    input.ir               the IR as captured and lowered, before the passes (for reading)
    constants.safetensors  parameters and buffers (tensors only; tied weights stored once)
    kernels/NNN_name.txt   the source of each chosen generated kernel (for reading and hashing)

Nothing in it is pickled. Loading parses the IR, loads the tensors, runs the
code generators again on the graph and takes, for each kernel, the candidate
and config the manifest names; no search and no database lookup happens
unless a recorded choice cannot be used. Checks on load, each a clear
:class:`ArtifactError`: not an artifact, a file changed since it was written
(SHA-256 of every file and of the manifest itself), another braze version, a
CUDA artifact on a machine without CUDA. An artifact tuned on another device
is loaded with its choices dropped and re-selected here (tuning database,
else measured defaults, or a search with ``retune=True``), which is logged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
import torch.utils._pytree as pytree

log = logging.getLogger("braze.artifact")

FORMAT = "braze-artifact"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """An artifact cannot be written or loaded (the message says why)."""


# --- versions and hashing --------------------------------------------------------
def versions() -> dict[str, str]:
    import importlib.metadata as md

    from braze.version import __version__

    out = {"braze": __version__, "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    for key, dist in (("triton", "triton"), ("tvm", "apache-tvm"), ("transformers", "transformers")):
        try:
            out[key] = md.version(dist)
        except md.PackageNotFoundError:
            out[key] = "none"
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return _sha(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _same_release(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


# --- the artifact object -------------------------------------------------------------
@dataclass
class Artifact:
    """A compiled model: call it like the model (same arguments, same outputs).

    ``manifest`` describes it; ``program`` is the braze program that runs;
    ``files`` holds the artifact's files (name -> bytes) for :meth:`save`.
    A freshly compiled artifact serialises its constants (the model's
    weights) and seals its manifest only when first saved (``finish``): a
    compile that is only run never copies the weights to the host.
    """

    program: Any
    manifest: dict
    files: dict = field(default_factory=dict, repr=False)
    in_spec: Any = field(default=None, repr=False)
    out_spec: Any = field(default=None, repr=False)
    finish: Optional[Callable[[], None]] = field(default=None, repr=False)

    def materialize(self) -> dict:
        """The artifact's files, complete (constants and sealed manifest included)."""
        if self.finish is not None:
            done, self.finish = self.finish, None
            done()
        return self.files

    def __call__(self, *args, **kwargs):
        m = self.manifest
        order = kwarg_order(self.in_spec)
        if order is not None:
            unknown = sorted(set(kwargs) - set(order))
            if unknown:
                raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; this artifact takes "
                                f"{self.signature()}")
            missing = [k for k in order if k not in kwargs]
            if missing:
                raise TypeError(f"missing keyword argument(s) {', '.join(missing)}; this artifact takes "
                                f"{self.signature()}")
            kwargs = {k: kwargs[k] for k in order}
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if self.in_spec is not None and spec != self.in_spec:
            raise TypeError(f"arguments do not match the compiled signature {self.signature()}")
        for i, v in m["value_leaves"].items():
            got = leaves[int(i)]
            if _jsonable(got) != v:
                raise ValueError(f"argument {m['leaf_names'][int(i)]}={got!r}: this artifact was compiled with "
                                 f"{v!r}; recompile for another value")
        inputs = [leaves[i] for i in m["input_leaves"]]
        syms = [int(leaves[i]) for i in m["sym_leaves"]]
        outs = self.program(*inputs, sym_values=syms)
        flat = [outs[x] if kind == "value" else x for kind, x in m["out_leaves"]]
        if self.out_spec is None:
            return tuple(flat) if len(flat) != 1 else flat[0]
        return pytree.tree_unflatten(flat, self.out_spec)

    def signature(self) -> str:
        names = self.manifest.get("leaf_names", [])
        return "(" + ", ".join(names) + ")"

    @property
    def kernels(self) -> list[dict]:
        return self.manifest["kernels"]

    def example_inputs(self, seed: int = 0, device: Optional[str] = None) -> tuple[tuple, dict]:
        """Random (args, kwargs) matching the compiled inputs (ints within the example's range)."""
        g = torch.Generator().manual_seed(seed)
        leaves: list[Any] = [None] * self.manifest["n_leaves"]
        for spec in self.manifest["inputs"]:
            leaves[spec["leaf"]] = _random_input(spec, g, device)
        for i, v in self.manifest["value_leaves"].items():
            leaves[int(i)] = v
        if self.in_spec is None:
            return tuple(leaves), {}
        args, kwargs = pytree.tree_unflatten(leaves, self.in_spec)
        return tuple(args), dict(kwargs)

    def save(self, path: str) -> str:
        """Write the artifact to a directory, or a zip file if ``path`` ends in ``.zip``."""
        write_files(path, self.materialize())
        return path


def kwarg_order(in_spec) -> Optional[list[str]]:
    """The keyword names of an (args, kwargs) TreeSpec, in the order it flattens them."""
    if in_spec is None or getattr(in_spec, "type", None) is not tuple:
        return None
    get = getattr(in_spec, "children", None)
    children = list(get()) if callable(get) else list(in_spec.children_specs)
    if len(children) != 2 or children[1].type is not dict:
        return None
    return list(children[1].context)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.dtype):
        return str(v)
    raise ArtifactError(f"value {v!r} of type {type(v).__name__} cannot be stored in an artifact manifest")


def _random_input(spec: Mapping[str, Any], g: torch.Generator, device: Optional[str]) -> torch.Tensor:
    from braze.ir.types import DTYPES_BY_NAME

    dtype = DTYPES_BY_NAME[spec["dtype"]]
    shape = spec["shape"]
    if dtype.is_floating_point:
        x = torch.randn(shape, generator=g).to(dtype)
    elif dtype == torch.bool:
        x = torch.rand(shape, generator=g) > 0.5
    else:
        lo, hi = spec.get("low", 0), spec.get("high", 1)
        x = torch.randint(lo, hi + 1, shape, generator=g).to(dtype)
    return x.to(device or spec.get("device", "cpu"))


# --- files ------------------------------------------------------------------------------
def write_files(path: str, files: Mapping[str, bytes]) -> None:
    if path.endswith(".zip"):
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in sorted(files.items()):
                z.writestr(name, data)
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArtifactError(f"{path} exists and is not a directory")
    for name, data in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def read_files(path: str) -> dict[str, bytes]:
    if not os.path.exists(path):
        raise ArtifactError(f"{path}: no such artifact")
    out: dict[str, bytes] = {}
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for n in names:
                full = os.path.join(root, n)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path).replace(os.sep, "/")] = f.read()
        return out
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is not a braze artifact (neither a directory nor a zip file)")
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.is_dir():
                out[info.filename] = z.read(info)
    return out


def _save_constants(constants: Mapping[str, torch.Tensor]) -> tuple[bytes, dict[str, str]]:
    """safetensors bytes of the constants, each storage once; aliases: key -> stored key."""
    from safetensors.torch import save

    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, t in constants.items():
        t = t.detach()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype) \
            if t.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        stored[key] = t.to("cpu").contiguous().clone()
    return save(stored), aliases


def _load_constants(data: bytes, aliases: Mapping[str, str], device_of: Mapping[str, str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    tensors = load(data)
    for key, src in aliases.items():
        tensors[key] = tensors[src]
    # copies: tensors viewing the file's bytes may sit at any offset, and
    # kernels (TVM's) assume allocator-aligned buffers
    return {k: torch.empty_like(v, device=device_of.get(k, "cpu")).copy_(v) for k, v in tensors.items()}


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
    from torch.export.graph_signature import InputKind, OutputKind

    from braze.autotune.space import device_info
    from braze.compiler.capture import capture_export
    from braze.compiler.driver import compile_graph
    from braze.compiler.kernels import target_device
    from braze.compiler.lower import lower
    from braze.compiler.report import GraphReport
    from braze.autotune.options import Options
    from braze.ir import DTYPE_NAMES, print_graph

    options = options or Options()
    if options.cuda_graphs:
        # NOTE: an artifact holds one plain program (load_artifact rebuilds it so);
        # compiling a CUDA-graph program here crashed on padding-eliminated graphs.
        log.info("braze: artifacts run without CUDA graphs; cuda_graphs ignored")
        options = options.replace(cuda_graphs=False)
    kwargs = dict(kwargs or {})
    args = tuple(args)
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
    from braze.ir.interpreter import bind_symbols

    manifest["env"] = bind_symbols(graph, [leaves[i] for i in input_leaves],
                                   [int(leaves[leaf_of[p]]) for p in spec.syms])
    art = Artifact(program, manifest, {}, in_spec, ep.call_spec.out_spec)
    with torch.no_grad():
        got = art(*args, **kwargs)
        if check:
            want = model(*args, **kwargs)
    if check:
        from braze.compiler.eager_check import compare_outputs, policy_for

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


def _dumps_spec(spec) -> Optional[str]:
    try:
        return pytree.treespec_dumps(spec)
    except Exception as e:  # noqa: BLE001 - an output type pytree cannot serialise: return a flat tuple
        log.warning("braze: the output structure (%s) cannot be serialised (%s); the artifact returns a tuple",
                    spec, e)
        return None


def _loads_spec(text: Optional[str]):
    if text is None:
        return None
    import importlib

    def types(node):
        if isinstance(node, dict):
            t = node.get("type")
            if isinstance(t, str):
                yield t
            for c in node.get("children_spec", ()):
                yield from types(c)
    doc = json.loads(text)
    for t in types(doc[1] if isinstance(doc, list) and len(doc) == 2 else {}):
        mod = t.rpartition(".")[0]
        if mod and mod != "builtins":
            try:
                importlib.import_module(mod)  # registers the output class with pytree
            except ImportError:
                pass
    try:
        return pytree.treespec_loads(text)
    except Exception as e:  # noqa: BLE001
        log.warning("braze: cannot rebuild the output structure (%s); the artifact returns a tuple", e)
        return None


# --- loading ------------------------------------------------------------------------
def read_manifest(path: str, files: Optional[Mapping[str, bytes]] = None) -> dict:
    """The verified manifest of an artifact (raises ArtifactError with the reason)."""
    from braze.version import __version__

    files = read_files(path) if files is None else files
    if "manifest.json" not in files:
        raise ArtifactError(f"{path} is not a braze artifact: it has no manifest.json")
    try:
        manifest = json.loads(files["manifest.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: manifest.json is not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a braze artifact (manifest format is "
                            f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has artifact format version {manifest.get('format_version')}; this braze "
                            f"reads version {FORMAT_VERSION}: recompile it with `braze compile`")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise ArtifactError(f"{path} was tampered with or is corrupt: manifest.json changed after it was written "
                            "(its SHA-256 does not match); refusing to load it")
    for name, digest in manifest.get("files", {}).items():
        if name not in files:
            raise ArtifactError(f"{path} is incomplete: {name} is missing")
        if _sha(files[name]) != digest:
            raise ArtifactError(f"{path} was tampered with or is corrupt: {name} changed after the artifact was "
                                f"written (SHA-256 {_sha(files[name])[:12]}..., manifest says {digest[:12]}...); "
                                "refusing to load it")
    built = manifest.get("versions", {}).get("braze", "?")
    if not _same_release(built, __version__):
        raise ArtifactError(f"{path} was compiled by braze {built}; this is braze {__version__}. Its IR and "
                            "kernels may not mean the same here: recompile it with `braze compile`")
    return manifest


def load_artifact(path: str, options=None, retune: bool = False) -> Artifact:
    """Load an artifact and make it runnable, without tuning (see the module doc)."""
    from dataclasses import replace

    from braze.autotune.space import device_info
    from braze.compiler.driver import build_launchers
    from braze.compiler.report import GraphReport
    from braze.compiler.runtime import CompiledProgram
    from braze.autotune.options import Options
    from braze.ir import parse_graph, verify

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
    from braze.compiler.kernels import _load_generators

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
    from braze.autotune.contract import Choice

    body = _body(graph)
    for e in kernels:
        node = body[e["node"]] if e["node"] < len(body) else None
        launcher = launchers.get(node) if node is not None else None
        if launcher is None:
            log.warning("braze: %s: no code generator here produces kernels for %s (chosen: %s, %s); it runs "
                        "through its reference implementation", path, e["node_name"], e["kernel"], e["backend"])
            continue
        from braze.autotune.recipe import same_position

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

"""The artifact file format: what a compiled model is on disk, and its checks.

An artifact is a directory (or the same files in a ``.zip``)::

    manifest.json          what it is: versions, device, inputs, outputs, kernel choices, file hashes
    graph.ir               the optimised braze IR that runs (text, ``braze.ir.print_graph``)
    input.ir               the IR as captured and lowered, before the passes (for reading)
    constants.safetensors  parameters and buffers (tensors only; tied weights stored once)
    kernels/NNN_name.txt   the source of each chosen generated kernel (for reading and hashing)

Nothing in it is pickled. ``read_manifest`` verifies an artifact before
anything is built from it, each failure a clear :class:`ArtifactError`: not
an artifact, a file changed since it was written (SHA-256 of every file and
of the manifest itself), another braze version. :class:`Artifact` is the
callable container. Compiling one and loading one are ``compiler/artifact.py``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
import torch.utils._pytree as pytree
from braze.ir.types import DTYPES_BY_NAME
from braze.version import __version__

log = logging.getLogger("braze.artifact")


FORMAT = "braze-artifact"
# NOTE: 2 (2026-12-07): int4 weights are packed in chunks of 32 channels (ir/quant.py); an
# artifact of version 1 holding int4 weights would load and read them wrongly.
FORMAT_VERSION = 2


class ArtifactError(RuntimeError):
    """An artifact cannot be written or loaded (the message says why)."""


# --- versions and hashing --------------------------------------------------------
def versions() -> dict[str, str]:
    import importlib.metadata as md

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


def read_manifest(path: str, files: Optional[Mapping[str, bytes]] = None) -> dict:
    """The verified manifest of an artifact (raises ArtifactError with the reason)."""
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

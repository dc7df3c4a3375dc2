"""The measurement worker: ``python -m braze.autotune.worker``.

Protocol: one JSON object per line. The worker first writes
``{"ready": true, "pid": ...}``; then for each request line on stdin it
writes one reply line:

- ``{"op": "measure", "recipe": {...}, "config": {...}, "env": {...}, "spec": {...}}``
  -> ``{"stage": "rebuilt"}`` once the kernel is rebuilt (imports done),
  then a :class:`braze.autotune.measure.Measurement` as a dict;
- ``{"op": "compile", "recipe": {...}, "config": {...}, "env": {...}, "device": {...},
  "target": [backend, arch, warp_size]}`` -> ``{"stage": "rebuilt"}``, then a
  Measurement whose status is ``ok`` once every GPU launch of the config is built
  for ``target`` into Triton's on-disk cache, run nowhere (CPU operands; see
  ``autotune/compile_only.py``);
- ``{"op": "ping"}`` -> ``{"pong": true}``;
- ``{"op": "exit"}`` -> exits.

Kernels are rebuilt from their recipes (``autotune/recipe.py``) and kept,
with their inputs and reference outputs, for the next configs of the same
kernel and shape. Anything a kernel prints goes to stderr: the protocol
has the original stdout to itself.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from braze.autotune.measure import Bench, Measurement, MeasureSpec, measure, node_device
from braze.autotune.recipe import RecipeError, rebuild, recipe_digest
from braze.autotune.space import DeviceInfo
from braze.autotune import compile_only


def main() -> int:
    # NOTE: keep the protocol channel private before importing anything that
    # might print (TVM, Triton): fd 1 becomes a copy of stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch

    torch.set_grad_enabled(False)
    kernels: dict[str, tuple] = {}
    benches: dict[tuple, Bench] = {}
    l2 = 0
    if torch.cuda.is_available():
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")

    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        op = msg.get("op")
        if op == "exit":
            break
        if op == "ping":
            proto.write('{"pong": true}\n')
            continue
        try:
            digest = recipe_digest(msg["recipe"])
            entry = kernels.get(digest)
            if entry is None:
                try:
                    entry = rebuild(msg["recipe"], DeviceInfo.from_dict(msg["device"]) if "device" in msg else None)
                except RecipeError as e:
                    proto.write(json.dumps(Measurement("compile_error", error=str(e)).to_dict()) + "\n")
                    continue
                kernels[digest] = entry
            # NOTE: rebuilding (importing generators and their compilers) is
            # not the candidate's time; the parent's trial timeout starts now.
            proto.write('{"stage": "rebuilt"}\n')
            kernel, node = entry
            if op == "compile":
                result = compile_only.build(kernel, node, msg["config"], msg["env"], msg["target"])
                proto.write(json.dumps(result.to_dict()) + "\n")
                continue
            spec = MeasureSpec(**msg["spec"])
            env = {k: int(v) for k, v in msg["env"].items()}
            device = node_device(node)
            bkey = (msg["recipe"]["ir"], tuple(sorted(env.items())), spec.seed)
            bench = benches.get(bkey)
            if bench is None:
                if len(benches) > 8:
                    benches.clear()
                bench = benches[bkey] = Bench(node, env, device, spec.seed, reference=spec.check)
            result = measure(kernel, msg["config"], bench, spec, l2)
        except Exception as e:  # noqa: BLE001 - report, stay alive
            device = "cpu"
            result = Measurement("runtime_error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
        # NOTE: a CUDA error (illegal address, ...) poisons the context: the
        # worker says so and exits; the parent starts a fresh one.
        exiting = result.status == "runtime_error" and device.startswith("cuda")
        proto.write(json.dumps(dict(result.to_dict(), exiting=exiting)) + "\n")
        if exiting:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

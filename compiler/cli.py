"""The ``braze`` command line.

    braze compile MODULE:FACTORY -o ARTIFACT     compile a model ahead of time into an artifact
    braze tune MODULE:FACTORY --trials N         tune its kernels into the tuning database
    braze db ls|show|export|import|merge|prune   look after the tuning database
    braze bench ARTIFACT                         time an artifact on random inputs
"""
from __future__ import annotations

import argparse
import os
import json
import logging
import sys
import time
from braze.autotune.options import Options
from braze.compiler.artifact import ArtifactError, compile_model, load_artifact
from braze.compiler.tune_model import tune_model
from braze.ir.types import DTYPES_BY_NAME

FACTORY_HELP = """\
MODULE:FACTORY names a Python callable: MODULE is an importable module
(my_pkg.models) or a file (path/to/models.py); FACTORY a callable in it,
called with the --arg values as keyword arguments. It returns either
  - (model, example_inputs), where example_inputs is a tuple of positional
    arguments, a dict of keyword arguments, or a (tuple, dict) pair; or
  - the model alone, and then --example-shapes describes the inputs.
The model is put in eval mode and compiled for exactly the example shapes
(and dtypes, and device): the artifact checks its inputs against them.

--example-shapes SPEC [SPEC ...], each [NAME=]DIMS[:DTYPE[:LOW-HIGH]]:
  DIMS 2x64; DTYPE float32 (default), bfloat16, float16, int64, int32, bool
  (or f32, bf16, f16, i64, i32, b8); LOW-HIGH the range of random integers.
  A SPEC without NAME= is a positional argument, with NAME= a keyword one.
  Example: --example-shapes input_ids=2x64:int64:0-127 attention_mask=2x64:int64:1-1
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="braze", description="braze: kernel fusion and autotuning for "
                                 "Transformer inference", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _compile_parser(sub)
    _tune_parser(sub)
    _db_parser(sub)
    b = sub.add_parser("bench", help="time an artifact on random inputs")
    b.add_argument("artifact")
    b.add_argument("--reps", type=int, default=20)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    args, rest = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(name)s: %(message)s")
    if rest:
        ap.error(f"unrecognised arguments: {' '.join(rest)}")
    from braze.autotune.db import TuningDBError  # lazy: imports sqlalchemy on first use

    try:
        return {"compile": cmd_compile, "tune": cmd_tune, "db": cmd_db, "bench": cmd_bench}[args.cmd](args)
    except (ArtifactError, TuningDBError, FactoryError) as e:
        print(f"braze {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:        # `braze db ls | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --- model factories ------------------------------------------------------------------
class FactoryError(ValueError):
    """MODULE:FACTORY or --example-shapes cannot be used (the message says why)."""


def _compile_like(p: argparse.ArgumentParser) -> None:
    p.add_argument("factory", metavar="MODULE:FACTORY", help="callable returning (model, example_inputs) or a model")
    p.add_argument("--example-shapes", nargs="+", default=None, metavar="SPEC", help="[NAME=]DIMS[:DTYPE[:LOW-HIGH]]")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the factory (VALUE parsed as JSON when it is JSON)")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "tvm", "torch"))
    p.add_argument("--db", default=None, help="tuning database path or SQLAlchemy URL "
                   "(default $BRAZE_TUNING_DB or ~/.cache/braze/tuning.db)")
    p.add_argument("--trials", type=int, default=40, help="trials per kernel and shape (all workers together)")
    p.add_argument("--seconds", type=float, default=None, help="overall tuning time limit")
    p.add_argument("--patience", type=int, default=16, help="stop a kernel after this many trials without gain")
    p.add_argument("--trial-timeout", type=float, default=120.0, help="seconds one config may take")
    p.add_argument("--workers", default="1", help="tuning processes: a number, or 'auto' (one per visible GPU)")
    p.add_argument("--storage", default=None, help="Optuna storage shared by the workers: a journal file or a "
                   "database URL (default: a journal file in a temporary folder)")
    p.add_argument("--seed", type=int, default=None)


def _compile_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model ahead of time into an artifact",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FACTORY_HELP,
                       description="Capture MODULE:FACTORY's model with torch.export, optimise it, choose its "
                       "kernels (tuning database; a search with --tune) and write an artifact that "
                       "braze.load() runs without tuning. -o ends in .zip for a zip file, else a directory.")
    _compile_like(p)
    p.add_argument("-o", "--output", required=True, help="artifact directory, or FILE.zip")
    p.add_argument("--tune", action="store_true", help="search configs the database does not know")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with eager on the example")


def _tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune a model's kernels into the tuning database",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FACTORY_HELP,
                       description="Capture and optimise MODULE:FACTORY's model, then tune each of its kernels "
                       "(every candidate, the library one included) and store every trial in the tuning "
                       "database. With --workers N, N processes share the studies and the database.")
    _compile_like(p)


def load_factory(ref: str, kwargs: dict):
    """Call MODULE:FACTORY; returns (model, args, kwargs or None if no example)."""
    import importlib
    import importlib.util

    mod_name, sep, fn_name = ref.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise FactoryError(f"{ref!r}: expected MODULE:FACTORY (e.g. my_models:llama or models.py:llama)")
    try:
        if mod_name.endswith(".py") or os.path.sep in mod_name:
            if not os.path.exists(mod_name):
                raise FactoryError(f"{mod_name}: no such file")
            spec = importlib.util.spec_from_file_location(os.path.basename(mod_name)[:-3] or "factory", mod_name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except FactoryError:
        raise
    except Exception as e:  # noqa: BLE001
        raise FactoryError(f"cannot import {mod_name}: {type(e).__name__}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise FactoryError(f"{mod_name} has no callable {fn_name}")
    try:
        made = fn(**kwargs)
    except TypeError as e:
        if kwargs and "argument" in str(e):
            raise FactoryError(f"{ref}({', '.join(f'{k}=...' for k in kwargs)}): {e} (check the --arg options)") \
                from None
        raise
    import torch

    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        model, example = made
    elif isinstance(made, torch.nn.Module):
        model, example = made, None
    else:
        raise FactoryError(f"{ref} returned {type(made).__name__}; expected a torch.nn.Module or "
                           "(module, example_inputs)")
    model.eval()
    if example is None:
        return model, None, None
    if isinstance(example, dict):
        return model, (), example
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[0], tuple) and \
            isinstance(example[1], dict):
        return model, example[0], example[1]
    if isinstance(example, (tuple, list)):
        return model, tuple(example), {}
    if isinstance(example, torch.Tensor):
        return model, (example,), {}
    raise FactoryError(f"{ref}: example_inputs is a {type(example).__name__}; expected a tuple, a dict or "
                       "(tuple, dict)")


_DTYPES = {"float32": "f32", "float": "f32", "float16": "f16", "half": "f16", "bfloat16": "bf16",
           "float64": "f64", "int64": "i64", "long": "i64", "int32": "i32", "int": "i32", "int8": "i8",
           "uint8": "u8", "bool": "b8"}


def parse_shapes(specs, device: str = "cpu", seed: int = 0) -> tuple[tuple, dict]:
    """``--example-shapes`` -> (args, kwargs) of random tensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    args, kwargs = [], {}
    for spec in specs:
        name, eq, rest = spec.partition("=")
        if not eq:
            name, rest = "", spec
        parts = rest.split(":")
        try:
            dims = [int(d) for d in parts[0].lower().split("x")] if parts[0] else []
        except ValueError:
            raise FactoryError(f"--example-shapes {spec!r}: DIMS must be integers like 2x64") from None
        dname = parts[1] if len(parts) > 1 and parts[1] else "float32"
        dtype = DTYPES_BY_NAME.get(_DTYPES.get(dname, dname))
        if dtype is None:
            raise FactoryError(f"--example-shapes {spec!r}: unknown dtype {dname!r}")
        if dtype.is_floating_point:
            x = torch.randn(dims, generator=g).to(dtype)
        elif dtype == torch.bool:
            x = torch.rand(dims, generator=g) > 0.5
        else:
            lo, hi = 0, 1
            if len(parts) > 2:
                try:
                    lo, hi = (int(v) for v in parts[2].split("-", 1))
                except ValueError:
                    raise FactoryError(f"--example-shapes {spec!r}: range must be LOW-HIGH") from None
            x = torch.randint(lo, hi + 1, dims, generator=g).to(dtype)
        x = x.to(device)
        if name:
            kwargs[name] = x
        else:
            args.append(x)
    return tuple(args), kwargs


def _factory_kwargs(items) -> dict:
    out = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq:
            raise FactoryError(f"--arg {it!r}: expected KEY=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _model_and_inputs(args):
    model, a, kw = load_factory(args.factory, _factory_kwargs(args.arg))
    if args.example_shapes:
        dev = next((p.device for p in model.parameters()), None)
        a, kw = parse_shapes(args.example_shapes, str(dev) if dev is not None else "cpu")
    elif a is None:
        raise FactoryError(f"{args.factory} returned a model without example inputs; give --example-shapes")
    return model, a, kw


def _options(args, tune: bool):
    return Options(backend=args.backend, tune=tune, tuning_db=args.db)


def _budget(args):
    from braze.autotune.tuner import Budget  # lazy: imports sqlalchemy on first use

    return Budget(trials=args.trials, deadline=None if args.seconds is None else time.time() + args.seconds,
                  patience=args.patience, trial_timeout=args.trial_timeout)


# --- commands -------------------------------------------------------------------------------
def cmd_tune(args) -> int:
    model, a, kw = _model_and_inputs(args)
    t0 = time.perf_counter()
    summary = tune_model(model, a, kw, _options(args, False), _budget(args), workers=args.workers,
                         storage=args.storage, seed=args.seed)
    _print_tuning(summary)
    print(f"tuned {len(summary['results'])} kernel(s) in {time.perf_counter() - t0:.1f} s; "
          f"{summary['measured']} configs measured; database {summary['db']}")
    dead = [w for w in summary.get("workers", []) if w.get("exit_code")]
    if dead:
        print(f"{len(dead)} worker(s) died; their finished trials are kept", file=sys.stderr)
    return 0


def _print_tuning(summary) -> None:
    rows = summary["results"]
    if not rows:
        print("no kernels to tune: no code generator produced candidates for this model")
        return
    print(f"{'node':<32} {'chosen':<34} {'ms':>10} {'library ms':>11}  config")
    for r in rows:
        ms = f"{r['time_ms']:.4g}" if r["time_ms"] is not None else "-"
        lib = f"{r['library_ms']:.4g}" if r["library_ms"] is not None else "-"
        print(f"{r['name'][:32]:<32} {str(r['kernel'])[:34]:<34} {ms:>10} {lib:>11}  {json.dumps(r['config'])}")


def cmd_compile(args) -> int:
    model, a, kw = _model_and_inputs(args)
    t0 = time.perf_counter()
    if args.tune:
        summary = tune_model(model, a, kw, _options(args, False), _budget(args), workers=args.workers,
                             storage=args.storage, seed=args.seed)
        _print_tuning(summary)
        print(f"tuning: {summary['measured']} configs measured ({summary['db']})")
    art = compile_model(model, a, kw, _options(args, False), check=not args.no_check)
    art.save(args.output)
    srcs: dict[str, int] = {}
    for k in art.kernels:
        srcs[k["source"]] = srcs.get(k["source"], 0) + 1
    chk = art.manifest.get("check")
    print(f"wrote {args.output}: {len(art.kernels)} kernel choice(s) "
          f"({', '.join(f'{n} from {s}' for s, n in sorted(srcs.items())) or 'no generated kernels'}); "
          f"{'checked against eager, max relative error %.2g; ' % chk['max_rel_err'] if chk else ''}"
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def cmd_bench(args) -> int:
    import torch

    t0 = time.perf_counter()
    art = load_artifact(args.artifact)
    load_s = time.perf_counter() - t0
    a, kw = art.example_inputs()
    cuda = art.manifest["device"]["kind"] == "cuda"
    with torch.no_grad():
        for _ in range(max(1, args.warmup)):
            art(*a, **kw)
        ts = []
        for _ in range(max(1, args.reps)):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            art(*a, **kw)
            if cuda:
                torch.cuda.synchronize()
            ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    res = {"artifact": args.artifact, "device": art.manifest["device"]["key"], "load_s": load_s,
           "median_ms": ts[len(ts) // 2], "min_ms": ts[0], "reps": len(ts), "kernels": len(art.kernels)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.artifact}: median {res['median_ms']:.3f} ms (min {res['min_ms']:.3f}) over {len(ts)} runs on "
              f"{res['device']}; loaded in {load_s:.2f} s")
    return 0


# --- braze db -------------------------------------------------------------------------------
def _db_parser(sub) -> None:
    p = sub.add_parser("db", help="look after the tuning database")
    p.add_argument("--db", default=None, help="path or SQLAlchemy URL (default $BRAZE_TUNING_DB or "
                   "~/.cache/braze/tuning.db)")
    dsub = p.add_subparsers(dest="db_cmd", required=True)
    dsub.add_parser("ls", help="one line per kernel and shape: trials, best time")
    s = dsub.add_parser("show", help="the trials of one kernel (name or key prefix)")
    s.add_argument("kernel")
    s.add_argument("--limit", type=int, default=50)
    e = dsub.add_parser("export", help="write every trial as JSON")
    e.add_argument("file", help="output file, - for stdout")
    i = dsub.add_parser("import", help="add the trials of a JSON export")
    i.add_argument("file")
    m = dsub.add_parser("merge", help="add every trial of another database")
    m.add_argument("source", help="path or URL of the other database")
    pr = dsub.add_parser("prune", help="delete trials (the best configs' trials stay)")
    pr.add_argument("--failed", action="store_true", help="failed trials")
    pr.add_argument("--older-than", type=float, metavar="DAYS", help="trials older than DAYS")
    pr.add_argument("--other-software", action="store_true", help="trials of other torch/triton/tvm/CUDA versions")


def cmd_db(args) -> int:
    from braze.autotune import dbtools  # lazy: imports sqlalchemy on first use
    from braze.autotune.db import open_db, safe_url  # lazy: imports sqlalchemy on first use

    db = open_db(args.db)
    c = args.db_cmd
    if c == "ls":
        rows = db.summary()
        print(f"{safe_url(db.url)}: {db.count()} trials, {len(db.all_best())} best configs")
        for r in rows:
            best = f"{r['best_ms']:.4g} ms" if r["best_ms"] is not None else "-"
            print(f"  {r['kernel'][:36]:<36} {r['kernel_key'][:10]}  {r['problem'][:48]:<48} "
                  f"{r['ok']:>4}/{r['trials']:<4} ok  best {best}   {r['device'][:40]}")
    elif c == "show":
        trials = [t for t in db.trials() if t.kernel_name == args.kernel or t.kernel_key.startswith(args.kernel)]
        if not trials:
            print(f"no trials of kernel {args.kernel!r}")
            return 1
        for t in trials[-args.limit:]:
            ms = f"{t.time_ms:.4g} ms" if t.time_ms is not None else ""
            print(f"{t.kernel_name} {json.dumps(t.problem)} {t.status:<13} {ms:>12} {json.dumps(t.config)}"
                  f"{'  ' + t.error.splitlines()[0][:80] if t.error else ''}")
    elif c == "export":
        n = dbtools.export_json(db, sys.stdout if args.file == "-" else args.file)
        if args.file != "-":
            print(f"exported {n} trials to {args.file}")
    elif c == "import":
        n = dbtools.import_json(db, args.file)
        print(f"imported {n} new trials into {safe_url(db.url)}")
    elif c == "merge":
        n = dbtools.merge(db, args.source)
        print(f"merged {n} new trials from {safe_url(args.source)}")
    elif c == "prune":
        n = db.prune(failed=args.failed, older_than_days=args.older_than, other_software=args.other_software)
        print(f"deleted {n} trials")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

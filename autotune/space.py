"""Search spaces as data.

Each kernel template declares a :class:`Space`: named knobs with their
ordered choices, constraints checked before anything is compiled (shared
memory, registers, divisibility), and a default config per device so the
code runs untuned. Codegen declares spaces; only ``autotune/`` searches them.

A *problem* is a plain dict describing one shape bucket of one kernel
(sizes, dtypes, e.g. ``{"M": 2048, "N": 4096, "K": 4096, "dtype": "bf16"}``);
constraints and defaults read it together with a :class:`DeviceInfo`.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

Config = dict[str, Any]
Problem = Mapping[str, Any]


@dataclass(frozen=True)
class DeviceInfo:
    """What the constraints and defaults need to know of a device."""

    kind: str                      # "cuda" | "cpu"
    name: str                      # "NVIDIA H100 80GB HBM3", "Intel(R) Xeon(R) Platinum 8480+"
    capability: tuple[int, int] = (0, 0)
    sm_count: int = 0
    smem_per_block: int = 0        # bytes a block may use (opt-in maximum)
    regs_per_sm: int = 65536
    l2_bytes: int = 0
    cores: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceInfo":
        """The inverse of ``dataclasses.asdict`` (after a JSON round trip)."""
        return cls(**dict(d, capability=tuple(d.get("capability", (0, 0)))))

    @property
    def key(self) -> str:
        if self.kind == "cuda":
            return f"{self.name}|sm{self.capability[0]}{self.capability[1]}|{self.sm_count}SM"
        return f"{self.name}|{self.cores}cores|{CPU_TIMING}"


# NOTE: part of a CPU's database key: how its candidates are timed (``measure._time_cpu``).
# "omp-context": each call right after a parallel ATen op, as it runs in a program (2026-12-07);
# records timed alone before then favoured TVM kernels that lose in the program, and a new
# key makes them misses (they stay in the database) instead of exact hits.
CPU_TIMING = "omp-context"


def _cpu_name() -> str:
    """The CPU's model ("Intel(R) Xeon(R) Platinum 8480+"), so that two machines share CPU
    records only when their cores are the same kind; the architecture where it is unknown."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name") and ":" in line:
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device: str = "cuda") -> DeviceInfo:
    """The DeviceInfo of a torch device string ("cuda", "cuda:1", "cpu")."""
    import os

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        smem = getattr(p, "shared_memory_per_block_optin", 0) or 48 * 1024
        return DeviceInfo("cuda", p.name, (p.major, p.minor), p.multi_processor_count, smem,
                          getattr(p, "regs_per_multiprocessor", 65536), getattr(p, "L2_cache_size", 0))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DeviceInfo("cpu", _cpu_name(), cores=cores)


@dataclass(frozen=True)
class Knob:
    """A named knob with its ordered choices.

    ``when=(parent, values)`` makes the knob conditional: it only matters
    when ``config[parent]`` is one of ``values`` (e.g. ``vector_width`` only
    when ``vectorize`` is True). An inactive knob may be left out of a
    config; :meth:`Space.normalize` pins it to its first choice. A config
    that leaves out an active conditional knob has it at its first choice too
    (:meth:`Space.fill_conditional`): make that choice the knob's "off".
    """

    name: str
    choices: tuple
    when: Optional[tuple[str, tuple]] = None

    def __post_init__(self):
        if not isinstance(self.choices, tuple):
            object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ValueError(f"knob {self.name} has no choices")
        if self.when is not None:
            parent, values = self.when
            object.__setattr__(self, "when", (parent, tuple(values)))

    def active(self, config: Mapping[str, Any]) -> bool:
        """Whether the knob matters for ``config`` (always, unless conditional)."""
        if self.when is None:
            return True
        parent, values = self.when
        return config.get(parent) in values


@dataclass(frozen=True)
class Constraint:
    """``check(config, problem, device) -> bool``; ``name`` says what it guards."""

    name: str
    check: Callable[[Config, Problem, DeviceInfo], bool]


@dataclass(frozen=True)
class Space:
    knobs: tuple[Knob, ...]
    constraints: tuple[Constraint, ...] = ()
    default: Optional[Callable[[Problem, DeviceInfo], Config]] = field(default=None, compare=False)
    # Changes to the default that an untuned selection times beside it (data: a few configs
    # measured near the best somewhere, for problems where no one default wins everywhere).
    alternates: Optional[Callable[[Problem, DeviceInfo], Sequence[Mapping[str, Any]]]] = field(
        default=None, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(name)

    def violations(self, config: Config, problem: Problem, device: DeviceInfo) -> list[str]:
        """Names of the constraints ``config`` breaks (unknown or missing knobs too).

        An inactive conditional knob may be missing; constraints see the
        normalised config (inactive knobs at their first choice).
        """
        out = [f"unknown knob {k}" for k in config if k not in self.names]
        for k in self.knobs:
            if k.name not in config:
                if k.active(config):
                    out.append(f"missing knob {k.name}")
            elif config[k.name] not in k.choices and k.active(config):
                out.append(f"{k.name}={config[k.name]} not among {k.choices}")
        if out:
            return out
        cfg = self.normalize(config)
        return [c.name for c in self.constraints if not c.check(cfg, problem, device)]

    def fill_conditional(self, config: Mapping[str, Any]) -> Config:
        """``config`` with each conditional knob it leaves out at its first choice (its "off":
        a config written before the knob existed); every other knob stays as given or missing."""
        return {**{k.name: k.choices[0] for k in self.knobs if k.when is not None and k.name not in config},
                **config}

    def normalize(self, config: Mapping[str, Any]) -> Config:
        """``config`` with every inactive conditional knob at its first choice,
        in the order of the knobs (two configs that differ only in inactive
        knobs normalise to the same dict)."""
        out: Config = {}
        for k in self.knobs:
            if k.active(config) and k.name in config:
                out[k.name] = config[k.name]
            else:
                out[k.name] = k.choices[0]
        return out

    def coerce(self, config: Mapping[str, Any]) -> Config:
        """A config read back from JSON (lists for tuples) with each value as
        the knob declares it; unknown keys are kept (``violations`` names them)."""
        out: Config = {}
        for name, v in config.items():
            if isinstance(v, list) and name in self.names:
                t = _as_tuple(v)
                v = t if t in self.knob(name).choices else v
            out[name] = v
        return out

    def active_knobs(self, config: Mapping[str, Any]) -> tuple[Knob, ...]:
        return tuple(k for k in self.knobs if k.active(config))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the knobs (for reports and the database)."""
        return {"knobs": [{"name": k.name, "choices": [_jsonable(c) for c in k.choices],
                           **({"when": [k.when[0], [_jsonable(v) for v in k.when[1]]]} if k.when else {})}
                          for k in self.knobs],
                "constraints": [c.name for c in self.constraints]}

    def valid(self, config: Config, problem: Problem, device: DeviceInfo) -> bool:
        return not self.violations(config, problem, device)

    def configs(self, problem: Problem, device: DeviceInfo) -> Iterator[Config]:
        """Every valid config (for small spaces and tests), each once
        (configs differing only in inactive knobs are the same config)."""
        seen = set()
        for values in itertools.product(*(k.choices for k in self.knobs)):
            cfg = self.normalize(dict(zip(self.names, values)))
            key = tuple(cfg.items())
            if key in seen:
                continue
            seen.add(key)
            if self.valid(cfg, problem, device):
                yield cfg

    def size(self) -> int:
        n = 1
        for k in self.knobs:
            n *= len(k.choices)
        return n

    def quick_configs(self, problem: Problem, device: DeviceInfo) -> list[Config]:
        """The default, then each valid alternate (the default with the alternate's knobs
        changed), each once: what the selection times when nothing is tuned."""
        base = self.default_config(problem, device)
        out = [base]
        for change in (self.alternates(problem, device) if self.alternates is not None else ()):
            cfg = self.normalize({**base, **change})
            if cfg not in out and self.valid(cfg, problem, device):
                out.append(cfg)
        return out

    def default_config(self, problem: Problem, device: DeviceInfo) -> Config:
        """The template's default, or the first valid config."""
        if self.default is not None:
            cfg = self.fill_conditional(self.default(problem, device))
            if self.valid(cfg, problem, device):
                return self.normalize(cfg)
        for cfg in self.configs(problem, device):
            return cfg
        raise ValueError(f"no valid config for problem {dict(problem)} on {device.name}")


EMPTY = Space(())


def pow2_bucket(n: int, lo: int = 1) -> int:
    """The shape bucket of a size: the next power of two (at least ``lo``)."""
    b = max(lo, 1)
    while b < n:
        b *= 2
    return b


def _as_tuple(v: Any) -> Any:
    return tuple(_as_tuple(x) for x in v) if isinstance(v, list) else v


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return str(v)


def problem_key(problem: Problem) -> str:
    """Canonical text of a problem (sorted JSON): the database key of a shape bucket."""
    import json

    return json.dumps({str(k): _jsonable(v) for k, v in problem.items()}, sort_keys=True, separators=(",", ":"))


# A size inside a text field: digits not glued to a name ("f32", "bf16" are
# dtypes, not sizes); "x" separates the dims of a shape ("128x32").
_INT = re.compile(r"(?<![A-Za-wyz_\d])\d+")


def problem_signature(problem: Problem) -> tuple[str, tuple[int, ...]]:
    """Split a problem into its skeleton (everything but the sizes) and its sizes.

    Two problems are buckets of the same kind when their skeletons are equal
    (same fields, dtypes, ranks); their distance is then measured on the sizes.
    """
    sizes: list[int] = []

    def walk(v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            sizes.append(v)
            return "#"
        if isinstance(v, str):
            sizes.extend(int(x) for x in _INT.findall(v))
            return _INT.sub("#", v)
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, float):
            return v
        return str(v)

    skel = {str(k): walk(problem[k]) for k in sorted(problem, key=str)}
    import json

    return json.dumps(skel, sort_keys=True, separators=(",", ":")), tuple(sizes)


def bucket_distance(a: Problem, b: Problem) -> Optional[float]:
    """Distance between two shape buckets (sum of |log2| size ratios), or
    None when they are not buckets of the same kind of problem."""
    sa, na = problem_signature(a)
    sb, nb = problem_signature(b)
    if sa != sb or len(na) != len(nb):
        return None
    d = 0.0
    for x, y in zip(na, nb):
        if x <= 0 or y <= 0:
            if x != y:
                d += 64.0
            continue
        d += abs(math.log2(x) - math.log2(y))
    return d

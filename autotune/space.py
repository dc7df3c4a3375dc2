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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

Config = dict[str, Any]
Problem = Mapping[str, Any]


@dataclass(frozen=True)
class DeviceInfo:
    """What the constraints and defaults need to know of a device."""

    kind: str                      # "cuda" | "cpu"
    name: str                      # "NVIDIA H100 80GB HBM3", "x86_64 (2 cores)"
    capability: tuple[int, int] = (0, 0)
    sm_count: int = 0
    smem_per_block: int = 0        # bytes a block may use (opt-in maximum)
    regs_per_sm: int = 65536
    l2_bytes: int = 0
    cores: int = 1

    @property
    def key(self) -> str:
        if self.kind == "cuda":
            return f"{self.name}|sm{self.capability[0]}{self.capability[1]}|{self.sm_count}SM"
        return f"{self.name}|{self.cores}cores"


def device_info(device: str = "cuda") -> DeviceInfo:
    """The DeviceInfo of a torch device string ("cuda", "cuda:1", "cpu")."""
    import os
    import platform

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        smem = getattr(p, "shared_memory_per_block_optin", 0) or 48 * 1024
        return DeviceInfo("cuda", p.name, (p.major, p.minor), p.multi_processor_count, smem,
                          getattr(p, "regs_per_multiprocessor", 65536), getattr(p, "L2_cache_size", 0))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DeviceInfo("cpu", platform.machine() or "cpu", cores=cores)


@dataclass(frozen=True)
class Knob:
    name: str
    choices: tuple

    def __post_init__(self):
        if not self.choices:
            raise ValueError(f"knob {self.name} has no choices")


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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(name)

    def violations(self, config: Config, problem: Problem, device: DeviceInfo) -> list[str]:
        """Names of the constraints ``config`` breaks (unknown or missing knobs too)."""
        out = [f"unknown knob {k}" for k in config if k not in self.names]
        for k in self.knobs:
            if k.name not in config:
                out.append(f"missing knob {k.name}")
            elif config[k.name] not in k.choices:
                out.append(f"{k.name}={config[k.name]} not among {k.choices}")
        if out:
            return out
        return [c.name for c in self.constraints if not c.check(config, problem, device)]

    def valid(self, config: Config, problem: Problem, device: DeviceInfo) -> bool:
        return not self.violations(config, problem, device)

    def configs(self, problem: Problem, device: DeviceInfo) -> Iterator[Config]:
        """Every valid config (for small spaces and tests)."""
        for values in itertools.product(*(k.choices for k in self.knobs)):
            cfg = dict(zip(self.names, values))
            if self.valid(cfg, problem, device):
                yield cfg

    def size(self) -> int:
        n = 1
        for k in self.knobs:
            n *= len(k.choices)
        return n

    def default_config(self, problem: Problem, device: DeviceInfo) -> Config:
        """The template's default, or the first valid config."""
        if self.default is not None:
            cfg = self.default(problem, device)
            if self.valid(cfg, problem, device):
                return cfg
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

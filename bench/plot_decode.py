"""Plot of ``bench/decode.py`` results: step time per batch size, every contender of the
given JSON files (one run may be split over several calls, e.g. batch 1 and batch 8/64),
with braze's ratio to torch.compile reduce-overhead written over its bars.

    python bench/plot_decode.py bench/results/decode-h100-2026-12-07-b1.json \
        bench/results/decode-h100-2026-12-07-b8-b64.json --out bench/results/decode-h100-2026-12-07.png

``bench/decode.py`` calls :func:`plot` on its own JSON after a run.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

PEER = "torch.compile reduce-overhead"


def rows_of(paths: Sequence[str]) -> tuple[dict, list]:
    meta, rows = {}, []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        meta = meta or d.get("meta", {})
        rows += [r for r in d.get("step", []) if r.get("step_ms")]
    return meta, rows


def plot(paths: Sequence[str], out: str) -> str:
    """Write the plot to ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, rows = rows_of(paths)
    if not rows:
        raise ValueError(f"no step rows in {', '.join(paths)}")
    batches = sorted({r["batch"] for r in rows})
    names = sorted({r["contender"] for r in rows}, key=lambda n: (not n.startswith("braze"), n))
    ms = {(r["contender"], r["batch"]): r["step_ms"] for r in rows}
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        xs = [j + i * width for j, b in enumerate(batches) if (name, b) in ms]
        ys = [ms[(name, b)] for b in batches if (name, b) in ms]
        bars = ax.bar(xs, ys, width, label=name)
        if name.startswith("braze"):
            for bar, b in zip(bars, [b for b in batches if (name, b) in ms]):
                peer = ms.get((PEER, b))
                if peer:
                    ax.annotate(f"{peer / ms[(name, b)]:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("decode step, ms (lower is better)")
    ax.set_title(f"Llama-1B shape bf16, cache {meta.get('cache', '?')}, {meta.get('device', '?')} "
                 f"({meta.get('date', '')})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print(plot(args.json, args.out))


if __name__ == "__main__":
    main()

"""ASVP against Standard AL and SVPp: accuracy per budget, labels to target, compute and total cost.

Two settings where pre-computed features are useful but far from perfect, so alignment matters:

- ``fmnist``: the supervised CIFAR-10 ResNet-20 of ../shared/data/weights on Fashion-MNIST
  (grayscale to 3 channels, 32x32);
- ``cifar``: a ResNet-20 pre-trained with SimCLR on the pool of the CIFAR-10 subset.

Each runs the ``compare`` flow (pipelines x seeds, the final network tested at every budget) and
prints its tables, the compute ratios Standard/ASVP and Standard/SVPp, and the goals:
ASVP within 1 point of Standard AL at every budget with >= 5x less compute, and ASVP at least as
accurate as SVPp at the final budget.

Usage::

    uv run python bench/asvp.py                         # both settings, 3 seeds (about an hour on 2 CPU cores)
    uv run python bench/asvp.py --settings fmnist --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    w = SHARED / "weights" / "cifar10-resnet"
    common = {
        "proxy": {"hidden": 256, "epochs": 100, "lr": 0.3, "weight_decay": 3e-4, "batch_size": 128},
        "al": {
            "strategy": "margin",
            "initial": args.initial,
            "batch": args.batch,
            "rounds": args.rounds,
            "trigger": args.trigger,
            "trigger_params": json.loads(args.trigger_params),
            "max_realignments": args.max_realignments,
        },
        "train": {
            "mode": "auto",
            "ft_epochs": args.ft_epochs,
            "batch_size": 64,
            "backbone_lr": 0.01,
            "lpft_backbone_lr": 0.003,
            "head_lr": 0.1,
            "augment": "crop",
        },
        "oracle": {"price_per_label": 0.10},
        "cost": {"price_per_hour": 3.0},
        "compare": {"pipelines": ["standard", "svpp", "asvp"], "strategies": ["margin"], "seeds": args.seeds},
        "experiment": {"progress": False, "device": "auto"},
    }
    fmnist = {
        **common,
        "experiment": {**common["experiment"], "name": "fmnist-r20"},
        "data": {
            "name": "fashion_mnist",
            "params": {"root": str(SHARED / "fashion-mnist"), "max_pool": args.pool, "max_test": args.test},
        },
        "encoder": {"arch": "cifar_resnet20", "weights": str(next(w.glob("resnet20-*.th")))},
    }
    cifar = {
        **common,
        "experiment": {**common["experiment"], "name": "cifar-simclr"},
        "data": {
            "name": "npz",
            "params": {
                "path": str(SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"),
                "max_pool": args.pool,
                "max_test": args.test,
            },
        },
        "encoder": {
            "arch": "cifar_resnet20",
            "ssl": {"method": "simclr", "epochs": args.ssl_epochs, "batch_size": 256},
        },
        "train": {**common["train"], "augment": "crop_flip"},
    }
    return {"fmnist": fmnist, "cifar": cifar}


def goals(summary: dict[str, Any]) -> list[str]:
    """The issue's goals, measured: what was met, and by how much what was missed."""
    b = summary["budgets"]
    std, asvp, svpp = b.get("standard/margin"), b.get("asvp/margin"), b.get("svpp/margin")
    out = []
    if std and asvp:
        gaps = [(s["labels"], 100 * (s["mean"] - a["mean"])) for s, a in zip(std, asvp, strict=False)]
        worst = max(gaps, key=lambda g: g[1])
        out.append(
            f"ASVP within 1 point of Standard at every budget: {'MET' if worst[1] <= 1 else 'MISSED'} "
            f"(largest gap {worst[1]:+.2f} points at {worst[0]} labels; per budget: "
            + ", ".join(f"{n}:{g:+.1f}" for n, g in gaps)
            + ")"
        )
    ratio = {r["pipeline"]: r for r in summary["ratios"]}
    if "asvp" in ratio:
        r = ratio["asvp"]
        out.append(
            f"ASVP >= 5x less compute than Standard: {'MET' if r['compute_ratio'] >= 5 else 'MISSED'} "
            f"(total compute ratio {r['compute_ratio']:.2f}x, sampling ratio {r['sampling_ratio']:.2f}x)"
        )
    if asvp and svpp:
        d = 100 * (asvp[-1]["mean"] - svpp[-1]["mean"])
        out.append(
            f"ASVP at least as accurate as SVPp at the final budget: {'MET' if d >= 0 else 'MISSED'} ({d:+.2f} points)"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["fmnist", "cifar"], choices=["fmnist", "cifar"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pool", type=int, default=5000, help="pool size (a stratified subsample)")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--ft-epochs", type=int, default=8)
    ap.add_argument("--ssl-epochs", type=int, default=15)
    ap.add_argument("--trigger", default="logme_drop")
    ap.add_argument("--trigger-params", default='{"tolerance": 0.0, "min_labels": 200}')
    ap.add_argument("--max-realignments", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="alcore-asvp-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from flows._env import configure

    configure(work)
    from alcore.config import parse_params
    from flows.compare import compare

    results = {}
    for name in args.settings:
        cfg = settings(args)[name]
        root = work / name
        root.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        summary = compare(parse_params(cfg), root=str(root))
        results[name] = {
            "summary": summary,
            "wall_s": time.perf_counter() - t0,
            "config": cfg,
            "tables": (root / "reports" / "compare" / "tables.md").read_text(),
            "goals": goals(summary),
        }

    print("\n" + "=" * 100)
    for name, r in results.items():
        c = r["config"]
        print(
            f"\n## {name}: {c['data']['name']} pool {args.pool}, test {args.test}, encoder {c['encoder']['arch']} "
            f"({'SimCLR ' + str(args.ssl_epochs) + ' epochs' if 'ssl' in c['encoder'] else 'supervised CIFAR-10 weights'}), "
            f"budgets {args.initial} + {args.batch} x {args.rounds - 1}, seeds {args.seeds}, trigger {args.trigger} "
            f"{args.trigger_params}; wall {r['wall_s'] / 60:.1f} min\n"
        )
        print(r["tables"])
        for g in r["goals"]:
            print("- " + g)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "asvp.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {args.out / 'asvp.json'}; plots: {work}/<setting>/reports/compare/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Comparing pipelines (Standard AL, SVPp, ASVP) across strategies and seeds: tables and plots.

The cost plane follows Figure 2 of Wen et al., TMLR 2024: labeling $ against training $ with
lines of equal total cost.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

import numpy as np

from alcore.ledger import PHASES
from alcore.report import save_png

SAMPLING_PHASES = ("proxy_training", "scoring", "fine_tuning", "reextraction")
"""The compute of the AL loop itself ("sampling time"): neither the shared setup nor the final model."""


def run_record(pipeline: str, strategy: str, seed: int, state: Any) -> dict[str, Any]:
    """One experiment's curve and costs, flattened from its state."""
    rows = state.ledger.rows()
    curve, proxy_curve = [], []
    for r in rows:
        rec = state.records.get(int(r["round"]), {})
        if r["round"] >= 1 and "test_accuracy" in rec:
            curve.append({"labels": int(r["labels_total"]), "accuracy": float(rec["test_accuracy"])})
        if r["round"] >= 1 and "proxy_accuracy" in rec:
            proxy_curve.append({"labels": int(r["labels_total"]), "accuracy": float(rec["proxy_accuracy"])})
    t = state.ledger.totals()
    sampling = math.fsum(t[f"seconds_{p}"] for p in SAMPLING_PHASES)
    return {
        "pipeline": pipeline,
        "strategy": strategy,
        "seed": seed,
        "curve": curve,
        "proxy_curve": proxy_curve,
        "final_accuracy": float(state.final["accuracy"]) if state.final else float("nan"),
        "labels": int(state.labels.n_labeled),
        "seconds": {p: float(t[f"seconds_{p}"]) for p in PHASES},
        "compute_seconds": float(t["compute_seconds"]),
        "sampling_seconds": sampling,
        "realignments": max(0, len(state.versions) - 1),
    }


def _groups(runs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    g: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        g[(r["pipeline"], r["strategy"])].append(r)
    return dict(g)


def budget_table(runs: list[dict[str, Any]], curve: str = "curve") -> dict[tuple[str, str], list[dict[str, float]]]:
    """Per (pipeline, strategy): test accuracy mean and std over seeds (``n`` of them) at each
    budget, of the final network (``curve``) or of the proxy that selected (``proxy_curve``)."""
    out = {}
    for key, rs in _groups(runs).items():
        by_budget: dict[int, list[float]] = defaultdict(list)
        for r in rs:
            for pt in r.get(curve, []):
                by_budget[pt["labels"]].append(pt["accuracy"])
        out[key] = [
            {"labels": b, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for b, v in sorted(by_budget.items())
        ]
    return out


def labels_to_reach(curve: list[dict[str, float]], target: float) -> int | None:
    """The first budget whose mean accuracy reaches ``target`` (None: never within the budgets)."""
    return next((int(p["labels"]) for p in curve if p["mean"] >= target), None)


def summarize(
    runs: list[dict[str, Any]],
    *,
    price_per_label: float,
    price_per_hour: float,
    target_fraction: float = 0.98,
    reference: str = "standard",
) -> dict[str, Any]:
    """Tables of a comparison: accuracy per budget, labels to reach the target, compute and money.

    The target is ``target_fraction`` x the reference pipeline's final mean accuracy (per strategy).
    """
    table = budget_table(runs)
    proxies = {k: v for k, v in budget_table(runs, "proxy_curve").items() if v}
    groups = _groups(runs)
    rows = []
    for (pipe, strat), rs in sorted(groups.items()):
        curve = table[(pipe, strat)]
        ref_curve = table.get((reference, strat))
        target = target_fraction * ref_curve[-1]["mean"] if ref_curve else None
        compute_s = float(np.mean([r["compute_seconds"] for r in rs]))
        sampling_s = float(np.mean([r["sampling_seconds"] for r in rs]))
        labels = float(np.mean([r["labels"] for r in rs]))
        reach = labels_to_reach(curve, target) if ref_curve else None
        rows.append(
            {
                "pipeline": pipe,
                "strategy": strat,
                "seeds": len(rs),
                "final_accuracy_mean": float(np.mean([r["final_accuracy"] for r in rs])),
                "final_accuracy_std": float(np.std([r["final_accuracy"] for r in rs])),
                "target_accuracy": target,
                "labels_to_target": reach,
                "compute_hours": compute_s / 3600,
                "sampling_seconds": sampling_s,
                "realignments_mean": float(np.mean([r["realignments"] for r in rs])),
                "label_usd": labels * price_per_label,
                "compute_usd": compute_s / 3600 * price_per_hour,
                "total_usd": labels * price_per_label + compute_s / 3600 * price_per_hour,
                "label_usd_to_target": None if reach is None else reach * price_per_label,
            }
        )
    by = {(r["pipeline"], r["strategy"]): r for r in rows}
    ratios = []
    for (pipe, strat), r in sorted(by.items()):
        ref = by.get((reference, strat))
        if ref and pipe != reference:
            ratios.append(
                {
                    "strategy": strat,
                    "pipeline": pipe,
                    "compute_ratio": ref["compute_hours"] / r["compute_hours"] if r["compute_hours"] else float("inf"),
                    "sampling_ratio": ref["sampling_seconds"] / r["sampling_seconds"]
                    if r["sampling_seconds"]
                    else float("inf"),
                }
            )
    return {
        "budgets": {f"{p}/{s}": v for (p, s), v in table.items()},
        "proxy_budgets": {f"{p}/{s}": v for (p, s), v in proxies.items()},
        "reference": reference,
        "has_reference": any(p == reference for p, _ in groups),
        "pipelines": rows,
        "ratios": ratios,
        "prices": {"per_label": price_per_label, "per_hour": price_per_hour},
        "target_fraction": target_fraction,
    }


def _mean_std(mean: float, std: float, n: int) -> str:
    """``87.50 ± 1.20 (n=3)``; one seed has no spread: ``87.50 (n=1)``."""
    return f"{100 * mean:.2f} (n=1)" if n == 1 else f"{100 * mean:.2f} ± {100 * std:.2f} (n={n})"


def format_markdown(summary: dict[str, Any]) -> str:
    """The comparison as markdown tables a person reads."""
    out = []
    budgets = summary["budgets"]
    keys = sorted(budgets)
    all_b = sorted({p["labels"] for v in budgets.values() for p in v})
    out.append("Test accuracy of the final network per budget (mean ± std over n seeds)\n")
    out.append("| labels | " + " | ".join(keys) + " |")
    out.append("|---:|" + "---:|" * len(keys))
    for b in all_b:
        cells = []
        for k in keys:
            pt = next((p for p in budgets[k] if p["labels"] == b), None)
            cells.append("" if pt is None else _mean_std(pt["mean"], pt["std"], pt["n"]))
        out.append(f"| {b} | " + " | ".join(cells) + " |")
    reference = summary.get("reference", "standard")
    has_ref = summary.get("has_reference", True)
    pr = summary["prices"]
    target = (
        f"target = {summary['target_fraction']:.0%} of Standard AL's final accuracy"
        if has_ref
        else f"no target: this comparison has no {reference} run (add {reference!r} to compare.pipelines)"
    )
    out.append(
        f"\nPer pipeline (means over seeds; ${pr['per_label']:.2f} per label, ${pr['per_hour']:.2f} per compute hour; "
        f"{target})\n"
    )
    out.append(
        "| pipeline/strategy | final acc % | labels to target | realignments | sampling s | compute h | label $ | compute $ | total $ |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary["pipelines"]:
        if r["target_accuracy"] is None:
            reach = f"no {reference} run"
        else:
            reach = "not reached" if r["labels_to_target"] is None else str(r["labels_to_target"])
        out.append(
            f"| {r['pipeline']}/{r['strategy']} | {_mean_std(r['final_accuracy_mean'], r['final_accuracy_std'], r['seeds'])} | "
            f"{reach} | {r['realignments_mean']:.1f} | {r['sampling_seconds']:.1f} | {r['compute_hours']:.4f} | "
            f"{r['label_usd']:.2f} | {r['compute_usd']:.4f} | {r['total_usd']:.2f} |"
        )
    if summary["ratios"]:
        out.append("\nCompute of Standard AL relative to each pipeline (higher = that pipeline is cheaper)\n")
        out.append("| pipeline/strategy | total compute Standard/x | sampling compute Standard/x |")
        out.append("|---|---:|---:|")
        for r in summary["ratios"]:
            out.append(f"| {r['pipeline']}/{r['strategy']} | {r['compute_ratio']:.2f} | {r['sampling_ratio']:.2f} |")
    return "\n".join(out) + "\n"


def plot_curves(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Accuracy vs. labels, one curve per pipeline/strategy, shaded ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    proxies = summary.get("proxy_budgets", {})
    for key, pts in sorted(summary["budgets"].items()):
        x = [p["labels"] for p in pts]
        m = np.array([p["mean"] for p in pts])
        s = np.array([p["std"] for p in pts])
        (line,) = ax.plot(x, m, "o-", ms=3, label=f"{key}: final network")
        ax.fill_between(x, m - s, m + s, alpha=0.2, color=line.get_color())
        if proxies.get(key):  # the proxy that selected, in the same colour, dashed
            px = [p["labels"] for p in proxies[key]]
            ax.plot(px, [p["mean"] for p in proxies[key]], "^--", ms=3, color=line.get_color(), label=f"{key}: proxy")
    ax.set_xlabel("labels bought")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs. labels: final network (solid) and proxy (dashed), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_cost_plane(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Labeling $ (to reach the target; all labels if never reached) vs. training $, with
    iso-total-cost lines, as in the paper's Figure 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    pts = []
    for r in summary["pipelines"]:
        lab = r["label_usd_to_target"] if r["label_usd_to_target"] is not None else r["label_usd"]
        missed = None if r["target_accuracy"] is None else r["label_usd_to_target"] is None
        pts.append((r["compute_usd"], lab, f"{r['pipeline']}/{r['strategy']}", missed))
    xmax = max(p[0] for p in pts) * 1.3 or 1.0
    ymin, ymax = min(p[1] for p in pts) * 0.9, max(p[1] for p in pts) * 1.1
    totals = sorted({round(p[0] + p[1], 2) for p in pts})
    xs = np.linspace(0, xmax, 50)
    for t in totals:
        ax.plot(xs, t - xs, ":", color="gray", lw=0.8)
        ax.text(xmax * 0.98, t - xmax * 0.98, f"${t:.2f}", fontsize=7, color="gray", ha="right", va="bottom")
    for i, (x, y, name, missed) in enumerate(pts):
        ax.scatter([x], [y], s=60, marker="x" if missed else "o")
        label = name + {True: " (target missed)", None: " (no target: all labels)", False: ""}[missed]
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5 + 11 * i), fontsize=8)  # staggered
    ax.set_xlim(0, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel(r"training \$ (compute hours x price)")  # \$: a literal dollar, no mathtext
    ax.set_ylabel(r"labeling \$ (to reach the target)")
    ax.set_title(r"Total cost = labeling \$ + training \$ (dotted: equal total)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)

"""Reports of an experiment: the per-round table, metrics, CSV and PNG plots."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from alcore._io import atomic_path, write_json_atomic, write_text_atomic


def save_png(fig: Any, path: str | os.PathLike[str]) -> None:
    """Write a matplotlib figure as PNG atomically, then free it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def round_rows(state: Any) -> list[dict[str, Any]]:
    """One row per round: the ledger's costs joined with the round's recorded metrics."""
    rows = state.ledger.rows()
    for row in rows:
        row.update(state.records.get(int(row["round"]), {}))
    return rows


def summary(state: Any) -> dict[str, Any]:
    """The headline numbers: labels, final accuracy, compute, money."""
    t = state.ledger.totals()
    out = {
        "labels": int(state.labels.n_labeled),
        "rounds": int(state.round),
        "compute_seconds": float(t["compute_seconds"]),
        "label_usd": float(t["label_usd"]),
        "compute_usd": float(t["compute_usd"]),
        "total_usd": float(t["total_usd"]),
    }
    last = state.records.get(state.round, {})
    if "proxy_accuracy" in last:
        out["proxy_accuracy"] = float(last["proxy_accuracy"])
    if "estimated_accuracy" in last:
        for k in ("estimated_accuracy", "estimated_accuracy_lower", "estimated_accuracy_upper"):
            out[k] = float(last[k])
        out["audit_labels"] = int(t["audit_labels"])
    if last.get("stop", {}).get("stop"):
        out["stopped_after_round"] = int(state.round)
        out["stop_reason"] = last["stop"]["reason"]
    if state.final:
        out["test_accuracy"] = float(state.final["accuracy"])
        out["final_mode"] = state.final.get("mode")
        if "estimated_accuracy" in state.final:  # the final network on the audit (no test set needed)
            for k in ("estimated_accuracy", "estimated_accuracy_lower", "estimated_accuracy_upper"):
                out[f"network_{k}"] = float(state.final[k])
    return out


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_monitor(rows: list[dict[str, Any]], final: dict[str, Any] | None = None) -> str:
    """Per round: the accuracy estimate with its interval (and the audit labels behind it), the
    proxy's true test accuracy beside it, the forecast to ``al.audit.target`` and the stop rule's
    decision with its reason. Empty when no round was judged."""
    judged = [r for r in rows if "stop" in r or "estimated_accuracy" in r]
    if not judged:
        return ""
    lines = ["Accuracy estimate (audit), forecast and stop rule, per round:"]
    head = f"{'round':>5}  {'labels':>6}  {'audit':>5}  {'estimate':>8}  {'95% interval':>15}  {'test (proxy)':>12}  forecast"
    lines += [head, "-" * len(head)]
    for r in judged:
        est = r.get("estimated_accuracy")
        iv = "-" if est is None else f"{_pct(r['estimated_accuracy_lower'])} - {_pct(r['estimated_accuracy_upper'])}"
        fc = r.get("forecast", {})
        fcs = "-"
        if fc:
            fcs = f"to {_pct(fc['target'])}: "
            if "forecast_labels_to_target" in r:
                fcs += f"+{r['forecast_labels_to_target']:,.0f} labels"
                if "forecast_usd_to_target" in r:
                    fcs += f", ${r['forecast_usd_to_target']:,.2f}"
                fcs += f" ({fc['status']})"
            else:
                fcs += fc["reason"]
        lines.append(
            f"{r['round']:>5}  {r['labels_total']:>6}  {r.get('audit_labels_total', 0):>5}  {_pct(est):>8}  {iv:>15}  "
            f"{_pct(r.get('proxy_accuracy')):>12}  {fcs}"
        )
    if final and "estimated_accuracy" in final:
        lines.append(
            f"final network ({final.get('mode')}, {final['labels']} labels): estimated {_pct(final['estimated_accuracy'])} "
            f"({_pct(final['estimated_accuracy_lower'])} - {_pct(final['estimated_accuracy_upper'])}) on "
            f"{final['audit_draws']} audit draws; test {_pct(final.get('accuracy'))}"
        )
    lines.append("")
    for r in judged:
        if "stop" in r:
            s = r["stop"]
            lines.append(f"round {r['round']:>3}: {'STOP' if s['stop'] else 'go on'} ({s['rule']}): {s['reason']}")
    return "\n".join(lines)


def write_rounds_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_metrics(state: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    m = summary(state)
    write_json_atomic(path, m)
    return m


def plot_accuracy(rows: list[dict[str, Any]], final: dict[str, Any] | None, path: str | os.PathLike[str]) -> None:
    """Accuracy vs. labels: the proxy each round, the network at each budget when it was trained
    (``al.evaluate_every_round``), the final network as a marker; with an audit, the estimate of
    the proxy's accuracy and its 95% band, and the round the stop rule stopped at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["labels_total"] for r in rows if "proxy_accuracy" in r]
    ys = [r["proxy_accuracy"] for r in rows if "proxy_accuracy" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(xs, ys, "o-", label="proxy MLP on features")
    nets = [(r["labels_total"], r["test_accuracy"]) for r in rows if "test_accuracy" in r]
    if nets:  # al.evaluate_every_round: the final network trained at each budget
        ax.plot(*zip(*nets, strict=True), "s-", ms=4, label="network at each budget")
    est = [r for r in rows if r.get("estimated_accuracy") is not None]
    if est:  # the audit's estimate of the proxy's accuracy, beside its true test accuracy above
        ex = [r["labels_total"] for r in est]
        ax.fill_between(
            ex,
            [r["estimated_accuracy_lower"] for r in est],
            [r["estimated_accuracy_upper"] for r in est],
            alpha=0.2,
            color="C2",
            label="95% interval (audit)",
        )
        ax.plot(ex, [r["estimated_accuracy"] for r in est], "--", color="C2", label="estimated accuracy (audit)")
    stops = [r for r in rows if r.get("stop", {}).get("stop")]
    if stops:
        s = stops[0]
        ax.axvline(
            s["labels_total"], color="C3", ls=":", label=f"stopped after round {s['round']} ({s['stop']['rule']})"
        )
    if final:
        ax.plot([final["labels"]], [final["accuracy"]], "*", ms=14, label=f"final network ({final.get('mode')})")
    ax.set_xlabel("labels bought")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Accuracy vs. labels")
    fig.tight_layout()
    save_png(fig, path)


def plot_costs(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Two panels: cumulative $ split into labels and compute; compute seconds by phase per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alcore.ledger import PHASES

    rounds = [str(r["round"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    x = list(range(len(rows)))
    label_cum = [r["label_usd_cum"] for r in rows]
    compute_cum = [r["compute_usd_cum"] for r in rows]
    ax1.bar(x, label_cum, label="labels $")
    ax1.bar(x, compute_cum, bottom=label_cum, label="compute $")
    for xi, lc, cc in zip(x, label_cum, compute_cum, strict=True):
        ax1.text(xi, lc + cc, f"${lc + cc:.2f}", ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(x, rounds)
    ax1.set_xlabel("round")
    ax1.set_ylabel("cumulative $")
    ax1.set_title("Total cost so far: labels + compute")
    ax1.legend(fontsize=8)
    bottom = [0.0] * len(rows)
    for ph in PHASES:
        secs = [float(r.get(f"seconds_{ph}", 0.0)) for r in rows]
        if any(secs):
            ax2.bar(x, secs, bottom=bottom, label=ph)
            bottom = [b + v for b, v in zip(bottom, secs, strict=True)]
    ax2.set_xticks(x, rounds)
    ax2.set_xlabel("round (0 = setup: pre-training, extraction)")
    ax2.set_ylabel("compute seconds")
    ax2.set_yscale("symlog", linthresh=1.0)
    ax2.set_title("Compute by phase")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def describe_results(state: Any, layout: Any, *, name: str, tracking_uri: str, human: bool = False) -> str:
    """The closing lines of a run: final accuracy, totals, and where every result is (``human``:
    labels people gave, kept under ``labels/``, outside DVC's outputs)."""
    m = summary(state)
    lines = []
    if state.final:
        f = state.final
        lines.append(f"Final network ({f['mode']}, {f['labels']} labels): test accuracy {f['accuracy']:.4f}")
        if f.get("evidence", {}).get("candidates"):
            from alcore.training import describe_evidence

            lines.append(f"  chosen as {describe_evidence(f['evidence'])}")
    lines.append(
        f"Total: {m['labels']} labels, ${m['label_usd']:.2f} labels + ${m['compute_usd']:.4f} compute "
        f"({m['compute_seconds']:.0f} s) = ${m['total_usd']:.2f}"
    )
    run_id = state.tracking.get("mlflow_run_id", "(none)")
    L = layout
    lines += [
        "",
        "Results:",
        f"  MLflow run     {run_id} in {tracking_uri}  (alcore ui mlflow)",
        f"  plots          {L.accuracy_plot}, {L.cost_plot}  (dvc plots show)",
        f"  metrics        {L.metrics}, {L.rounds_csv}  (dvc metrics show)",
        f"  state          {L.state(name, human=human)}"
        + ("  (labels people gave: in no DVC output)" if human else ""),
        f"  DVC outputs    {L.dataset.parent}/, {L.encoder.parent}/, {L.features('pool').parent}/, {L.runs}/, {L.reports}/",
    ]
    return "\n".join(lines)

"""The ``compare`` flow: pipelines x strategies x seeds on one dataset and encoder.

Each combination is an ``active_learning`` subflow (experiment ``NAME-PIPELINE-STRATEGY-sSEED``,
state under ``compare/runs/``), with the final network trained and tested at every budget. Shared
work (encoder, features, identical fine-tunes) comes from Prefect's cache. Writes
``reports/compare/`` (summary JSON, markdown tables, two PNG plots) and one MLflow run.

``dvc repro compare/dvc.yaml`` runs it as a DVC stage; ``alcore compare`` directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow

from alcore._io import write_json_atomic, write_text_atomic
from alcore.checks import check_params
from alcore.compare import format_markdown, plot_cost_plane, plot_curves, run_record, summarize
from alcore.config import Params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from flows._stop import rearm
from flows._util import flow_main, say
from flows.active_learning import active_learning
from flows.pipeline import encoder, features, prepare, pretext
from tasks import tracking

RUNS = "compare/runs"


def variant(params: Params, pipeline: str, strategy: str, seed: int) -> Params:
    """The parameters of one combination (the final network is tested at every budget)."""
    d = params.model_dump(mode="json")
    d["experiment"].update(name=f"{params.experiment.name}-{pipeline}-{strategy}-s{seed}", seed=seed)
    d["al"].update(pipeline=pipeline, strategy=strategy, evaluate_every_round=True)
    if strategy != params.al.strategy:
        d["al"]["strategy_params"] = {}
    return Params.model_validate(d)


@flow(name="compare", validate_parameters=True)
def compare(params: Params, root: str = ".") -> dict[str, Any]:
    """Run every combination of ``params.compare`` and write the comparison."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    c, L = params.compare, Layout(Path(root), runs_dir=RUNS)
    check_params(params)
    variants = [variant(params, pl, s, seed) for pl in c.pipelines for s in c.strategies for seed in c.seeds]
    for p in variants:  # every combination is checked before any work
        check_params(p)
    for stage in (prepare, encoder, features, pretext):
        stage(params, root=root)
    records = []
    for p in variants:
        say(f"\n== {p.experiment.name}")
        active_learning(p, root=root, runs=RUNS)
        st = ExperimentState.load(L.state_of(p))
        records.append(run_record(p.al.pipeline, p.al.strategy, p.experiment.seed, st))
    summary = summarize(
        records,
        price_per_label=params.oracle.price_per_label,
        price_per_hour=params.cost.price_per_hour,
        target_fraction=c.target_fraction,
    )
    out = L.compare
    write_json_atomic(out / "summary.json", {"summary": summary, "runs": records})
    md = format_markdown(summary)
    write_text_atomic(out / "tables.md", md)
    plot_curves(summary, out / "accuracy_vs_labels.png")
    plot_cost_plane(summary, out / "cost_plane.png")
    run_id = tracking.start_run(f"compare-{params.experiment.name}", params.model_dump(mode="json"))
    for r in summary["pipelines"]:
        key = f"{r['pipeline']}.{r['strategy']}"
        tracking.log_metrics(
            run_id,
            {
                f"{key}.final_accuracy": r["final_accuracy_mean"],
                f"{key}.compute_hours": r["compute_hours"],
                f"{key}.total_usd": r["total_usd"],
            },
            step=0,
        )
        for pt in summary["budgets"][f"{r['pipeline']}/{r['strategy']}"]:
            tracking.log_metrics(run_id, {f"{key}.accuracy": pt["mean"]}, step=pt["labels"])
    tracking.log_artifacts(
        run_id, [out / "summary.json", out / "tables.md", out / "accuracy_vs_labels.png", out / "cost_plane.png"]
    )
    tracking.finish(run_id)
    say("\n" + md)
    say(
        f"Comparison written to {out}/ (tables.md, summary.json, accuracy_vs_labels.png, cost_plane.png); MLflow run {run_id}"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.compare [--params FILE] [--set key=value]`` (what compare/dvc.yaml runs)."""
    return flow_main("python -m flows.compare", argv, lambda p, _: compare(p))


if __name__ == "__main__":
    sys.exit(main())

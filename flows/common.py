"""What the flows that drive rounds share (active_learning, labeling_cycle, compare, as3l): the
checked inputs, the experiment's learner with its Prefect steps, and its MLflow run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from alcore.checks import check_budget, check_features_match_encoder, check_oracle, strategy_needs_pretext
from alcore.config import Params
from alcore.features import read_spec
from alcore.layout import Layout
from alcore.report import plot_accuracy, plot_costs, round_rows, write_metrics, write_rounds_csv
from alcore.rounds import ActiveLearner, RunInputs
from alcore.run_state import ExperimentState
from flows._util import read_json, say
from flows.steps import TaskSteps
from tasks import tracking


def read_inputs(p: Params, L: Layout) -> RunInputs:
    """The stages' outputs, checked before any work: the budget against the pool, the oracle
    against unlabeled images, the feature files against each other and against the encoder."""
    inputs = RunInputs.from_layout(p, L)
    check_budget(p.al, inputs.n_pool)
    check_oracle(p.oracle, inputs.n_unlabeled)
    spec = read_spec(inputs.pool["path"])
    read_spec(inputs.test["path"]).check_compatible(spec)
    check_features_match_encoder(inputs.encoder["path"], spec)
    return inputs


def open_learner(p: Params, L: Layout, inputs: RunInputs, *, new: Callable[[ExperimentState], bool]) -> ActiveLearner:
    """The experiment's learner on its saved state (resumed, or new), with Prefect tasks as its
    steps. ``new(state)`` says whether to (re)do round 0: the setup paid for before the first label
    (pre-training; the pool's extraction when the pipeline uses it) and the first feature version."""

    def setup() -> dict[str, float]:
        pretraining = read_json(L.encoder_meta, "encoder")["seconds"]
        if strategy_needs_pretext(p.al.strategy):  # the rotation task is pre-training paid for this strategy
            pretraining += read_json(L.pretext_meta, "pretext")["seconds"]
        return {"pretraining": pretraining, "extraction": read_json(L.features_meta, "features")["seconds"]["pool"]}

    learner = ActiveLearner.open(p, inputs, TaskSteps(p), run_dir=L.dir_of(p), new=new, setup=setup)
    learner.say = say
    return learner


def track(learner: ActiveLearner) -> str:
    """The experiment's MLflow run (created once, its id kept in the state); every round measured
    from now on is logged to it, with one line to the console."""
    st = learner.state
    p = learner.params
    run_id = tracking.start_run(
        p.experiment.name, p.model_dump(mode="json", exclude={"compare"}), st.tracking.get("mlflow_run_id")
    )
    st.tracking["mlflow_run_id"] = run_id
    learner.on_round = lambda r: log_round(learner.state, run_id, r)
    return run_id


def log_round(st: ExperimentState, run_id: str, r: int) -> None:
    """Round ``r``'s costs, metrics and trigger decision to MLflow, and one line to the console."""
    row = next(x for x in round_rows(st) if x["round"] == r)
    trig = st.records[r].get("trigger", {})
    nets = st.records[r].get("networks", [])
    metrics: dict[str, Any] = {k: v for k, v in row.items() if k != "round"}
    metrics.update({f"trigger_{k}": v for k, v in trig.items()})
    metrics.update({k: v for n in nets for k, v in network_metrics(n["evidence"], "network_").items()})
    stop = st.records[r].get("stop")
    metrics.pop("stop", None)
    if stop is not None:
        metrics.update({f"stop_{k}": v for k, v in stop["indicators"].items()})
        metrics["stop"] = float(stop["stop"])
    tracking.log_metrics(run_id, metrics, step=r)
    if stop is not None:
        tracking.set_tags(run_id, {f"round_{r}.stop_reason": stop["reason"][:4900]})
        if stop["stop"]:
            tracking.set_tags(
                run_id, {"stop.round": r, "stop.rule": stop["rule"], "stop.reason": stop["reason"][:4900]}
            )
    if nets:
        tracking.set_tags(run_id, {f"round_{r}.network_mode": ",".join(n["mode"] for n in nets)})
    acc = " ".join(f"{k} {st.records[r][k]:.4f}" for k in ("proxy_accuracy", "test_accuracy") if k in st.records[r])
    say(
        f"round {r:>3}: {row['labels_total']:>6} labels  {acc}  compute {row['compute_seconds']:.1f} s  total ${row['total_usd_cum']:.2f}"
    )
    if "estimated_accuracy" in row:
        say(
            f"           estimated accuracy {100 * row['estimated_accuracy']:.1f}% "
            f"({100 * row['estimated_accuracy_lower']:.1f}% to {100 * row['estimated_accuracy_upper']:.1f}%) "
            f"on {row['audit_labels_total']} audit labels"
            + (f"; forecast: {row['forecast']['reason']}" if row.get("forecast") else "")
        )
    if stop is not None:
        say(f"           stop rule {stop['rule']}: {'STOP' if stop['stop'] else 'go on'}: {stop['reason']}")
    if trig.get("fired") and trig.get("reextracted", True):  # fired, but the probe won: said by the round
        say(f"           realigned after round {r} ({trig['reason']}): features v{st.records[r]['version']}")


def log_summary(st: ExperimentState, run_id: str, summary: dict[str, Any]) -> None:
    """The final numbers of a run to its MLflow run."""
    tracking.log_metrics(
        run_id,
        {
            **{f"final_{k}": v for k, v in summary.items() if isinstance(v, int | float)},
            **network_metrics((st.final or {}).get("evidence", {}), "final_"),
        },
        step=st.round,
    )
    if st.final is not None:
        tracking.set_tags(run_id, {"final.train_mode": st.final["mode"]})


def network_metrics(ev: dict[str, Any], prefix: str) -> dict[str, float]:
    """A network's evidence as MLflow metrics: held-out accuracy per candidate, the held-out labels
    each mode won and lost against the probe (what ``train.auto_margin`` judges), labels, steps."""
    out = {f"{prefix}heldout_{m}": c["accuracy"] for m, c in ev.get("candidates", {}).items()}
    for m, c in ev.get("candidates", {}).items():
        if "wins" in c:
            out[f"{prefix}heldout_{m}_wins"], out[f"{prefix}heldout_{m}_losses"] = float(c["wins"]), float(c["losses"])
    out.update({f"{prefix}{k}": float(ev[k]) for k in ("n_labeled", "steps", "held_out") if k in ev})
    return out


def write_reports(st: ExperimentState, L: Layout, run_id: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-round table (``L.rounds_csv``), ``L.metrics`` and the two plots, also logged to the
    MLflow run ``run_id``: what the report stage and the labeling cycle give every experiment."""
    rows = round_rows(st)
    write_rounds_csv(rows, L.rounds_csv)
    metrics = write_metrics(st, L.metrics)
    plot_accuracy(rows, st.final, L.accuracy_plot)
    plot_costs(rows, L.cost_plot)
    if run_id:
        tracking.log_artifacts(run_id, [L.accuracy_plot, L.cost_plot, L.rounds_csv, L.metrics])
    return rows, metrics


@contextmanager
def ends_its_mlflow_run(st: Callable[[], ExperimentState]) -> Iterator[None]:
    """A flow that fails or is stopped ends the experiment's MLflow run (``st()``'s) as FAILED or
    KILLED (a stop: Ctrl-C, SIGTERM), never leaving it RUNNING; a resumed run reopens it."""
    try:
        yield
    except BaseException as e:
        run_id = st().tracking.get("mlflow_run_id") if _has_state(st) else None
        if run_id:
            try:
                tracking.finish(run_id, "FAILED" if isinstance(e, Exception) else "KILLED")
            except Exception:  # noqa: BLE001 - the store may be what failed: the flow's own error counts
                pass
        raise


def _has_state(st: Callable[[], ExperimentState]) -> bool:
    try:
        st()
    except Exception:  # noqa: BLE001 - no learner yet
        return False
    return True

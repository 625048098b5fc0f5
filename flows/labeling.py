"""The ``labeling_cycle`` flow: active learning with people as the oracle (``oracle.name: human``).

One run of the flow is one cycle, and it never waits:

1. ingest every annotation file in ``runs/<name>/labeling/inbox/`` (a filled batch CSV, or a Label
   Studio JSON / CSV export): valid rows are committed to the label state and paid for in one
   atomic state write, then the file moves to ``inbox/done/``;
2. if the open batch is labeled (``labeling.min_fraction`` of it), measure its round (retrain the
   proxy, realign when the trigger fires), select the next batch among the unlabeled ids that are
   not out with annotators, and record it as open, with the proxy's guesses, in one atomic write;
   after the last round, train the final network;
3. write the open batch's labeling job to ``outbox/`` (``batch-<round>.csv``,
   ``batch-<round>.labelstudio.json``): a pure function of the state, rewritten if missing.

Waiting for people is the schedule's job: ``alcore serve`` runs the cycle on a cron schedule, and
a run with nothing to do ends in seconds. We chose this over a paused flow run that waits for
input: a run killed at any point (SIGKILL, a reboot) leaves the state and the files consistent, the
next scheduled run carries on, and there is no long-lived run to resume by hand.

Rows that cannot be imported are listed, with row numbers, in ``inbox/done/<file>.problems.txt``,
in the run's log (a warning) and in its result (``refused``); the cycle itself goes on: one bad row
never stops the valid ones, the selection or the final network. A label that a reviewer corrected
replaces the old one in its round (never paid again), and the final network is trained again.
"""

# No ``from __future__ import annotations`` here: a served run gets this flow's function pickled
# by value into a fresh process, and string annotations (``"Params"``) would not resolve there.
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger

from alcore.config import Params
from alcore.errors import ConfigError, problem
from alcore.experiment import ExperimentState, derive_seed, experiment_lock, validate_names
from alcore.labeling import Batch, describe_import, final_is_current
from alcore.layout import Layout
from flows._util import archive, say
from flows.active_learning import (
    _measure,
    _Run,
    _select_round,
    finish,
    log_round,
    mlflow_run,
    open_experiment,
    read_inputs,
)
from tasks.labeling import export_batch, ingest_labels, predict_labels


def require_human(p: Params) -> None:
    if p.oracle.name != "human":
        raise ConfigError(
            problem(
                f"the labeling cycle hands batches to people, but oracle.name={p.oracle.name!r}",
                allowed="oracle.name=human",
                fix="set oracle.name: human in params.yaml (or --set oracle.name=human)",
            )
        )


def labeled_fraction(st: ExperimentState, batch: Batch) -> float:
    return float(np.count_nonzero(st.labels.round_of(batch.ids))) / max(batch.ids.size, 1)


def _advance(run: _Run, state_path: Path, test_labels: np.ndarray) -> str:
    """The open batch is labeled: measure its round, then select and record the next batch, or
    train the final network after the last round. Returns what was done."""
    p, st = run.p, run.state
    schedule = p.al.schedule()
    batch = st.labeling.open_batch
    r = batch.round if batch is not None else 0
    proxy = None
    if r and r not in st.records:
        st.records[r], proxy = _measure(run, r, test_labels)
        st.save(state_path)
        log_round(run, mlflow_run(run), r)
    if r >= len(schedule):
        if final_is_current(st.final, st.labels):
            return "finished"
        st.final = None  # labels were added or corrected since the final network: train it again
        s = finish(run, mlflow_run(run), state_path, len(schedule))
        st.final = {**(st.final or {}), "labels_digest": st.labels.digest()}
        st.save(state_path)
        return f"all {len(schedule)} rounds labeled; final network: test accuracy {s.get('test_accuracy', 0):.4f}"
    sel = _select_round(run, r + 1, schedule[r], proxy, exclude=st.labeling.requested_ids(st.labels))
    if sel.scorer is not None:
        pred, conf = predict_labels(sel.scorer, sel.key, sel.features, sel.ids)
    else:  # round 1: chosen before any proxy exists, so no guesses to show
        pred, conf = np.full(sel.ids.size, -1, np.int64), np.zeros(sel.ids.size)
    for phase, seconds in sel.seconds.items():
        st.ledger.record(r + 1, phase, seconds)
    st.labeling.add_batch(Batch(r + 1, sel.ids, pred, conf))
    st.save(state_path)  # the batch is open from here on: its job files follow from the state
    return f"selected batch {r + 1} ({sel.ids.size} samples)"


@flow(name="labeling_cycle", validate_parameters=True)
def labeling_cycle(params: Params, fresh: bool = False, root: str = ".", runs: str = "runs") -> dict[str, Any]:
    """One cycle: ingest the annotations that arrived; once the open batch is labeled, retrain the
    proxy, realign if the trigger fires, select the next batch and export it. Then end.
    ``fresh`` archives the experiment's state first (its labels are kept in the archive)."""
    p, L = params, Layout(Path(root), runs_dir=runs)
    require_human(p)
    name = p.experiment.name
    inputs = read_inputs(p, L)
    state_path = L.state(name)
    log = get_run_logger()
    with experiment_lock(L.run_dir(name)):
        if fresh and state_path.exists():
            say(f"Archived the previous state to {archive(state_path)}")
        st = open_experiment(p, L, inputs, setup=lambda st: not st.versions)
        if not state_path.exists():
            st.save(state_path)
        imports = ingest_labels(
            str(state_path), str(L.inbox(name)), classes=list(inputs.info["classes"]), labeling=p.labeling
        )
        for rec in imports:
            say(describe_import(rec))
            for line in [*rec.get("conflicts", []), *rec.get("corrections", [])]:
                log.info(line)
            if rec.get("message"):
                log.warning(rec["message"])
        st = ExperimentState.load(state_path)
        run = _Run(p, L, st, inputs.info)
        batch = st.labeling.open_batch
        did = "waiting for labels"
        if batch is None or labeled_fraction(st, batch) >= p.labeling.min_fraction:
            did = _advance(run, state_path, inputs.test_labels)
        batch = st.labeling.open_batch
        assert batch is not None  # _advance opens one before any other
        files = export_batch(
            p.oracle, p.labeling, p.data, str(L.labeling(name)), batch, seed=derive_seed(run.seed, "oracle")
        )
        out = {
            "did": did,
            "open_round": batch.round,
            "open_size": int(batch.ids.size),
            "open_labeled": int(np.count_nonzero(st.labels.round_of(batch.ids))),
            "requested": int(st.labeling.requested_ids(st.labels).size),
            "labels": st.labels.n_labeled,
            "label_usd": float(st.ledger.totals()["label_usd"]),
            "finished": final_is_current(st.final, st.labels),
            "imports": [{k: v for k, v in r.items() if k != "message"} for r in imports],
            # rows refused are reported, never a failed cycle: Label Studio exports every answer so
            # far, and one bad row must not stop the labels, the selection or the final network
            "refused": [r["message"] for r in imports if r.get("message")],
            "job": files,
        }
        say(
            f"{did}. Batch {batch.round}: {out['open_labeled']}/{batch.ids.size} labeled; "
            f"job in {L.outbox(name)} (for Label Studio: alcore label setup); drop annotations in {L.inbox(name)}"
        )
    return out


def run_cycle(params: Params, *, root: str = ".") -> dict[str, Any]:
    """Check every name, then run one labeling cycle."""
    require_human(params)
    validate_names(params)
    return labeling_cycle(params, root=root)


def serve_cycle(params: Params, *, cron: str, name: str, root: str | os.PathLike[str]) -> None:
    """Serve the labeling cycle as the deployment ``labeling_cycle/<name>`` on a cron schedule
    (blocks until stopped; stopping pauses the schedule). Runs never overlap (``limit=1``); two
    served processes on one experiment are kept apart by the experiment lock."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import EntrypointType

    require_human(params)
    validate_names(params)
    try:
        CronSchedule(cron=cron)
    except ValueError as e:
        raise ConfigError(
            problem(f"cron schedule {cron!r} is invalid ({e})", fix="e.g. --cron '*/10 * * * *' (every 10 minutes)")
        ) from None
    labeling_cycle.serve(
        name=name,
        cron=cron,
        parameters={"params": params.model_dump(mode="json"), "root": str(Path(root).resolve())},
        description="Ingest annotations, retrain the proxy, select and export the next batch (alcore).",
        tags=["alcore", f"experiment:{params.experiment.name}"],
        limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.labeling [--params FILE] [--set key=value ...]``: one labeling cycle."""
    from alcore.cli import main as cli_main

    return cli_main(["label", "cycle", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

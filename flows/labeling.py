"""The ``labeling_cycle`` flow: active learning with people as the oracle (``oracle.name: human``).

One run of the flow is one cycle, and it never waits:

1. ingest every annotation file in ``labels/<name>/labeling/inbox/`` (a filled batch CSV, or a Label
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

from alcore.checks import check_params
from alcore.config import Params
from alcore.errors import ConfigError, problem
from alcore.labeling import describe_import
from alcore.layout import Layout
from alcore.rounds import ActiveLearner
from alcore.run_state import Batch, ExperimentState, experiment_lock, final_is_current
from alcore.seeding import derive_seed
from flows._stop import rearm
from flows._util import archive, clean_stale_temps, flow_main, say
from flows.common import ends_its_mlflow_run, log_summary, open_learner, read_inputs, track, write_reports
from tasks import tracking
from tasks.labeling import export_batch, ingest_labels


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
    """The part of ``batch`` answered (its audit ids included)."""
    return float(np.count_nonzero(st.answered(batch.ids))) / max(batch.ids.size, 1)


def advance(learner: ActiveLearner) -> str:
    """The open batch is labeled: measure its round, then query the next batch among the ids not
    out with annotators and open it, or train the final network after the last round. Returns what
    was done."""
    st, schedule = learner.state, learner.schedule
    batch = st.labeling.open_batch
    r = batch.round if batch is not None else 0
    if r and r not in st.records:
        learner.measure(r)
    why = learner.stopped(r) if r else None
    if why is not None:
        say(f"Stopped after round {r} of {len(schedule)} ({learner.params.al.stop}): {why}")
    if r >= len(schedule) or why is not None:
        if final_is_current(st.final, st.labels):
            return "finished"
        s = learner.finish()  # labels were added or corrected since the final network: trained again
        log_summary(st, st.tracking["mlflow_run_id"], s)
        done = f"all {len(schedule)} rounds labeled" if why is None else f"stopped after round {r}: {why}"
        return f"{done}; final network: test accuracy {s.get('test_accuracy', 0):.4f}"
    query = learner.query(r + 1, schedule[r], exclude=st.requested_ids())
    learner.open_batch(query)  # open from here on: its job files follow from the state
    return f"selected batch {r + 1} ({query.ids.size} samples)"


def adopt_legacy_dir(L: Layout, name: str) -> None:
    """A people-labeled experiment that an older alcore kept in ``runs/<name>/`` (a DVC output that
    ``dvc repro`` deletes) moves to ``labels/<name>/`` (that nothing deletes), once."""
    old, new = L.run_dir(name), L.run_dir(name, human=True)
    if (new / "state.json").exists() or not (old / "state.json").exists():
        return
    if not ExperimentState.load(old / "state.json").labeling.batches:
        return  # a simulated run of the same name: not people's labels
    if new.exists() and not any(new.iterdir()):
        new.rmdir()
    new.parent.mkdir(parents=True, exist_ok=True)
    os.rename(old, new)
    say(f"Moved the labels people gave from {old} (a DVC output, deleted by dvc repro) to {new}")


def refuse_to_discard(st: ExperimentState, path: Path, discard_labels: bool) -> None:
    """``--fresh`` starts an experiment over: the labels people gave would be bought again."""
    n = st.labels.n_labeled
    if n and not discard_labels:
        raise ConfigError(
            problem(
                f"--fresh would start {path.parent.name!r} over without the {n} label(s) people gave "
                f"(${st.ledger.totals()['label_usd']:.2f}); they would be asked for and paid again",
                allowed="--fresh on an experiment people have not labeled yet",
                fix="leave out --fresh to carry on; give the new run another experiment.name; or, to start over "
                "anyway, add --discard-labels (the old state is kept as state.archived-*.json beside it)",
            )
        )


@flow(name="labeling_cycle", validate_parameters=True)
def labeling_cycle(
    params: Params, fresh: bool = False, root: str = ".", runs: str = "runs", discard_labels: bool = False
) -> dict[str, Any]:
    """One cycle: ingest the annotations that arrived; once the open batch is labeled, retrain the
    proxy, realign if the trigger fires, select the next batch and export it. Then end.

    The experiment lives in ``labels/<name>/``, which no command deletes. ``fresh`` archives the
    experiment's state first, and is refused when people have labeled some of it, unless
    ``discard_labels`` (the labels are kept in the archive, never deleted)."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root), runs_dir=runs)
    require_human(p)
    name = p.experiment.name
    inputs = read_inputs(p, L)
    state_path = L.state_of(p)
    log = get_run_logger()
    with experiment_lock(L.dir_of(p), locks=L.locks):
        adopt_legacy_dir(L, name)
        clean_stale_temps(L, L.dir_of(p))
        if fresh and state_path.exists():
            refuse_to_discard(ExperimentState.load(state_path), state_path, discard_labels)
            say(f"Archived the previous state to {archive(state_path)}")
        learner = open_learner(p, L, inputs, new=lambda st: not st.versions)
        if not state_path.exists():
            learner.save()
        with ends_its_mlflow_run(lambda: learner.state):
            imports = ingest_labels(
                str(state_path), str(L.inbox(name)), classes=list(inputs.classes), labeling=p.labeling
            )
            for rec in imports:
                say(describe_import(rec))
                for line in [*rec.get("conflicts", []), *rec.get("corrections", [])]:
                    log.info(line)
                if rec.get("message"):
                    log.warning(rec["message"])
            st = learner.reload()  # with the labels just committed
            batch = st.labeling.open_batch
            did = "waiting for labels"
            run_id = None
            if batch is None or labeled_fraction(st, batch) >= p.labeling.min_fraction:
                run_id = track(learner)
                did = advance(learner)
            if run_id is not None:  # this cycle logged to MLflow: the run's tables and plots, and it ends
                write_reports(st, Layout(L.dir_of(p)), run_id)
                done = final_is_current(st.final, st.labels)
                tracking.set_tags(run_id, {"alcore.labeling": "finished" if done else "waiting for labels"})
                tracking.finish(run_id)
            batch = st.labeling.open_batch
            assert batch is not None  # advance opens one before any other
            files = export_batch(
                p.oracle,
                p.labeling,
                p.data,
                str(L.labeling(name)),
                batch,
                seed=derive_seed(p.experiment.seed, "oracle"),
            )
            out = {
                "did": did,
                "open_round": batch.round,
                "open_size": int(batch.ids.size),
                "open_labeled": int(np.count_nonzero(st.answered(batch.ids))),
                "open_audit": int(batch.audit.sum()),
                "requested": int(st.requested_ids().size),
                "audit_labels": int(st.ledger.totals()["audit_labels"]),
                "stopped": learner.stopped(max(st.records)) if st.records else None,  # the stop rule's reason
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
    """Check every name and parameter, then run one labeling cycle."""
    require_human(params)
    check_params(params)
    return labeling_cycle(params, root=root)


def serve_cycle(params: Params, *, cron: str, name: str, root: str | os.PathLike[str]) -> None:
    """Serve the labeling cycle as the deployment ``labeling_cycle/<name>`` on a cron schedule
    (blocks until stopped; stopping pauses the schedule). Runs never overlap (``limit=1``); two
    served processes on one experiment are kept apart by the experiment lock."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import EntrypointType

    require_human(params)
    check_params(params)
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
    return flow_main("python -m flows.labeling", argv, lambda p, _: run_cycle(p))


if __name__ == "__main__":
    sys.exit(main())

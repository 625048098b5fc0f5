"""The ``active_learning`` flow: the rounds of one experiment, driven by :class:`alcore.rounds.ActiveLearner`.

The pipeline (``al.pipeline``: ``standard``, ``svpp``, ``asvp``; Wen et al., TMLR 2024) decides how
each round is scored; the learner queries, has the oracle label the batch (the ``label`` task),
updates, measures, and at the end trains the final network. Its steps are Prefect tasks
(:class:`flows.steps.TaskSteps`): cached on keys derived from all their inputs, retried, their
results persisted as JSON.

Every purchase is committed, with its compute seconds, to the experiment state in one atomic
write. Killed anywhere, the flow resumes at the last committed round; the ``label`` task is cached
on the ids it was asked for, so no label is bought twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from alcore.config import Params
from alcore.errors import ConfigError, problem
from alcore.layout import Layout
from alcore.proxy import warm_up
from alcore.run_state import experiment_lock
from flows._stop import rearm
from flows._util import archive, clean_stale_temps, say
from flows.common import ends_its_mlflow_run, log_summary, open_learner, read_inputs, track


def refuse_human(p: Params) -> None:
    if p.oracle.name == "human":
        raise ConfigError(
            problem(
                "active_learning buys every round's labels at once, but oracle.name=human answers through files",
                allowed="oracle.name=simulated here; the human oracle runs in the labeling cycle",
                fix="run `alcore label cycle` (once) or `alcore serve` (on a schedule); `alcore run` does it for you",
            )
        )


@flow(name="active_learning", validate_parameters=True)
def active_learning(
    params: Params, fresh: bool = False, root: str = ".", runs: str = "runs", final: bool = True
) -> dict[str, Any]:
    """Run (or resume) the experiment ``params.experiment.name`` (state under ``root/runs/NAME``);
    ``final=False`` stops after the last round without training the final network."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root), runs_dir=runs)
    refuse_human(p)
    name = p.experiment.name
    inputs = read_inputs(p, L)
    with experiment_lock(L.run_dir(name), locks=L.locks):
        clean_stale_temps(L, L.run_dir(name))
        if fresh and L.state(name).exists():
            say(f"Archived the previous state to {archive(L.state(name))}")
        learner = open_learner(p, L, inputs, new=lambda st: st.round == 0)
        run_id = track(learner)
        if learner.state.round:
            say(
                f"Resuming {name!r} after round {learner.state.round} ({learner.state.labels.n_labeled} labels already bought)."
            )
        with ends_its_mlflow_run(lambda: learner.state):  # the report stage ends it when all went well
            warm_up()  # a one-time import is not a cost of any round
            summary = learner.run(final=final)
            log_summary(learner.state, run_id, summary)
        return summary

"""The ``as3l`` flow: AS3L end to end for a few labels (Wen et al., Neurocomputing 2024).

One round: the one-shot selection (strategy ``as3l``) picks all ``labels`` samples at once, the
oracle labels them, and the final network is trained with ``train.mode=as3l`` (prior-guided
FixMatch; the priors are written beside the network as ``net-K.priors.parquet``), held to its
linear probe on held-out labels when ``train.holdout > 0`` (:func:`alcore.semi.semi_guard`: the
probe is handed over unless AS3L beats it; with one label per class nothing can be held out and
the probe is kept; ``train.holdout: 0`` trains AS3L's network unconditionally). The stages
before (prepare, encoder, features) and the report are the pipeline's own. It also measures the
cheap baseline: a proxy MLP trained on the prior pseudo-labels of the whole pool.

``python -m flows.as3l [--labels K] [--params params.yaml] [--set key=value]``, or ``alcore as3l``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from alcore._io import write_json_atomic
from alcore.as3l import read_priors, train_on_priors
from alcore.checks import check_params
from alcore.config import Params
from alcore.idtable import IdIndex
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from alcore.steps import load_data, load_features, priors_path
from flows._util import flow_main, say
from flows.pipeline import pipeline
from tasks import tracking


def as3l_params(params: Params, labels: int | None) -> Params:
    """``params`` turned into one AS3L round of ``labels`` (default ``al.initial``) labels. The audit
    (``al.audit``) is kept: its labels are bought with the one round and judge the final network.
    A stop rule is dropped (``al.stop: never``): one round leaves nothing to stop."""
    d = params.model_dump(mode="json")
    k = int(labels or params.al.initial)
    d["experiment"]["name"] = f"{params.experiment.name}-as3l-{k}"
    if d["al"]["strategy"] != "as3l":
        d["al"]["strategy_params"] = {}
    d["al"].update(strategy="as3l", rounds=1, initial=k, pipeline="svpp", stop="never", stop_params={})
    d["train"]["mode"] = "as3l"
    return Params.model_validate(d)


@flow(name="as3l", validate_parameters=True)
def as3l(params: Params, labels: int | None = None, root: str = ".") -> dict[str, Any]:
    """AS3L with ``labels`` labels; returns the run's summary plus the prior baseline's accuracy."""
    p = as3l_params(params, labels)
    check_params(p)
    if params.al.stop != "never":
        say(
            f"al.stop={params.al.stop} is ignored: AS3L buys its {p.al.initial} labels in one round, so no later round is left to stop"
        )
    L = Layout(Path(root))
    metrics = pipeline(p, fresh=True, root=root)
    st = ExperimentState.load(L.state_of(p))
    ids, priors, _ = read_priors(str(priors_path(st.final["model"])))
    pool, test = load_features(L.features("pool")), load_features(L.features("test"))
    order = IdIndex(ids).positions(pool.ids)
    priors_in_pool = type(priors)(labels=priors.labels[order], confidence=priors.confidence[order])
    data = load_data(p.data)
    clf = train_on_priors(
        pool.X, priors_in_pool, data.n_classes, random_state=p.experiment.seed, **p.proxy.model_dump(), device="cpu"
    )
    test_y = np.asarray(data.test.labels)[IdIndex(data.test.ids).positions(test.ids)]
    baseline = float((clf.predict(test.X) == test_y).mean())
    out = {**metrics, "prior_baseline_accuracy": baseline, "labels": int(st.labels.n_labeled)}
    write_json_atomic(L.reports / "as3l.json", out)
    run_id = st.tracking.get("mlflow_run_id")
    if run_id:
        tracking.log_metrics(run_id, {"prior_baseline_accuracy": baseline}, step=1)
    audit = ""
    if "network_estimated_accuracy" in out:  # the audit's estimate of the network (no test set needed)
        audit = (
            f" (estimated on the audit: {out['network_estimated_accuracy']:.4f}, 95% interval "
            f"{out['network_estimated_accuracy_lower']:.4f}-{out['network_estimated_accuracy_upper']:.4f})"
        )
    say(
        f"AS3L with {out['labels']} labels: prior-guided network {metrics['test_accuracy']:.4f}{audit}, "
        f"proxy on the priors alone {baseline:.4f} -> {L.reports / 'as3l.json'}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.as3l [--labels K] [--params FILE] [--set key=value]``."""

    def options(ap: Any) -> None:
        ap.add_argument("--labels", type=int, default=None, help="labels to buy in one shot (default: al.initial)")

    return flow_main("python -m flows.as3l", argv, lambda p, a: as3l(p, labels=a.labels), options)


if __name__ == "__main__":
    sys.exit(main())

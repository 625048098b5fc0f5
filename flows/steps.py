"""The round's steps as Prefect tasks: :class:`TaskSteps`, the implementation of
:class:`alcore.rounds.Steps` that the flows give the learner.

Each step runs the task of the same name (cached on its derived key, retried, its result persisted
as JSON). A cached result that names a file which is gone or changed since is computed again
(:func:`flows._util.ensure_artifact`). With ``orchestration.dispatch: pools`` the GPU steps
(fine-tuning, extraction) run as flow runs on the GPU work pool (:mod:`flows.gpu`). The device,
progress bars and memory budget come from the parameters: they say where and how, and no cache
key holds them.
"""

from __future__ import annotations

from typing import Any

from alcore.config import DataCfg, Params
from flows._util import ensure_artifact
from flows.extract import extract_all
from flows.gpu import on_gpu
from tasks.evaluate import evaluate
from tasks.label import label
from tasks.labeling import predict_labels
from tasks.proxy import evaluate_proxy, train_proxy
from tasks.realign import decide_realign
from tasks.select import select

Ref = dict[str, str]


class TaskSteps:
    """:class:`alcore.rounds.Steps` through Prefect tasks, for the flows of ``params``."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.device = params.experiment.device
        self.progress = params.experiment.progress
        self.memory_budget = params.features.memory_budget_bytes

    def train_proxy(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return ensure_artifact(train_proxy, "proxy", *args, device=self.device, memory_budget=self.memory_budget, **kw)

    def evaluate_proxy(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return evaluate_proxy(*args, **kw)

    def select(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return select(*args, memory_budget=self.memory_budget, device=self.device, **kw)

    def predict_labels(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return predict_labels(*args, **kw)

    def label(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return label(*args, **kw)

    def fine_tune(self, *args: Any, **kw: Any) -> dict[str, Any]:
        step = on_gpu("fine_tune", self.params.orchestration)
        return ensure_artifact(step, "model", *args, device=self.device, progress=self.progress, **kw)

    def extract(
        self, weights: Ref, data: DataCfg, data_fingerprint: str, outs: dict[str, str], *, batch_size: int
    ) -> dict[str, dict[str, Any]]:
        p = self.params
        p = p.model_copy(update={"data": data, "features": p.features.model_copy(update={"batch_size": batch_size})})
        return extract(weights, p, data_fingerprint, outs)

    def decide_realign(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return decide_realign(*args, memory_budget=self.memory_budget, **kw)

    def evaluate(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return evaluate(*args, device=self.device, **kw)


def extract(weights: Ref, p: Params, fingerprint: str, outs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Features of each split in ``outs`` (split -> file) with ``weights``, where ``p`` says: in
    this flow (whole, or in parts on ``features.runner``), or with ``orchestration.dispatch: pools``
    as one flow run on the GPU work pool. Returns per split the file's ref (``features``) and the
    compute seconds."""
    if p.orchestration.dispatch == "pools":
        return on_gpu("extract", p.orchestration)(weights, p, fingerprint, outs)
    return extract_all(weights, p, fingerprint, outs)

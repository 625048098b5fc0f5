"""The stage flows (``prepare``, ``encoder``, ``features``, ``report``) and the whole ``pipeline``.

``dvc.yaml`` runs each stage as ``python -m flows.pipeline STAGE``; ``alcore run`` runs them all in
one flow run. Every stage reads ``params.yaml`` through :class:`alcore.config.Params`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow

from alcore._io import remove_stale_temps, write_json_atomic
from alcore.checks import check_budget, check_oracle, check_params, pretext_needed
from alcore.config import Params, load_params
from alcore.encoders import read_encoder_config
from alcore.errors import ConfigError, problem
from alcore.features import read_spec
from alcore.keys import ref
from alcore.layout import Layout
from alcore.ledger import format_table
from alcore.report import describe_results
from alcore.run_state import ExperimentState
from alcore.steps import write_pretext_skipped
from flows._stop import rearm
from flows._util import ensure_artifact, flow_main, read_json, say
from flows.active_learning import active_learning
from flows.common import write_reports
from flows.gpu import on_gpu
from flows.labeling import labeling_cycle
from flows.steps import extract
from tasks import tracking
from tasks.data import describe_data
from tasks.pretext import pretext_losses

STAGES = ("prepare", "encoder", "features", "pretext", "active_learning", "report")


@flow(name="prepare", validate_parameters=True)
def prepare(params: Params, root: str = ".") -> dict[str, Any]:
    """Load the dataset, check it, and describe it in ``data/dataset.json``."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    info = describe_data(params.data)
    write_json_atomic(Layout(Path(root)).dataset, info)
    say(f"dataset {info['name']}: {info['n_pool']} pool / {info['n_test']} test images, {info['n_classes']} classes")
    return info


@flow(name="encoder", validate_parameters=True)
def encoder(params: Params, root: str = ".") -> dict[str, Any]:
    """Build the pre-trained encoder: ``models/encoder.safetensors`` (+ ``encoder.json``)."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root))
    info = read_json(L.dataset, "prepare")
    out = ensure_artifact(
        on_gpu("build_encoder", p.orchestration),
        "encoder",
        p.encoder,
        p.data,
        info["fingerprint"],
        seed=p.experiment.seed,
        device=p.experiment.device,
        out=str(L.encoder),
        progress=p.experiment.progress,
    )
    built = read_encoder_config(L.encoder)  # what was built and where its weights came from
    how = "SimCLR on the pool" if p.encoder.needs_ssl else built.source
    write_json_atomic(
        L.encoder_meta,
        {
            "seconds": out["seconds"],
            "sha256": out["encoder"]["sha256"],
            "arch": p.encoder.arch,
            "weights": how,
            "config": built.to_dict(),
        },
    )
    say(f"encoder {p.encoder.arch} ({how}): {built.describe()}; {out['seconds']:.1f} s")
    return out


@flow(name="features", validate_parameters=True)
def features(params: Params, root: str = ".") -> dict[str, Any]:
    """Extract pool and test features: ``features/{pool,test}.parquet`` (+ ``features.json``)."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root))
    info = read_json(L.dataset, "prepare")
    outs = extract(ref(L.encoder), p, info["fingerprint"], {s: str(L.features(s)) for s in ("pool", "test")})
    meta = {
        "seconds": {s: o["seconds"] for s, o in outs.items()},
        "sha256": {s: o["features"]["sha256"] for s, o in outs.items()},
        "spec": read_spec(L.features("pool")).to_json(),
    }
    write_json_atomic(L.features_meta, meta)
    n = info["n_pool"] + info["n_test"]
    secs = sum(meta["seconds"].values())
    say(f"features: {n} images in {secs:.1f} s ({n / max(secs, 1e-9):.0f} img/s) -> {L.features('pool').parent}/")
    return outs


@flow(name="pretext", validate_parameters=True)
def pretext(params: Params, root: str = ".") -> dict[str, Any]:
    """PT4AL's rotation pretext task on the pool: ``features/pretext.parquet`` (+ ``pretext.json``).

    When no strategy of the run reads the pretext loss (``pretext.when=auto``), the stage writes an
    empty loss file that says so, and costs nothing.
    """
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root))
    info = read_json(L.dataset, "prepare")
    if not pretext_needed(p):
        reason = f"pretext.when={p.pretext.when} and no strategy of this run reads the pretext loss"
        write_pretext_skipped(L.pretext, reason)
        write_json_atomic(L.pretext_meta, {"computed": False, "seconds": 0.0, "reason": reason})
        say(f"pretext: skipped ({reason})")
        return {"computed": False, "seconds": 0.0}
    out = ensure_artifact(
        pretext_losses,
        "pretext",
        ref(L.encoder),
        p.data,
        info["fingerprint"],
        p.pretext,
        seed=p.experiment.seed,
        device=p.experiment.device,
        out=str(L.pretext),
        progress=p.experiment.progress,
    )
    write_json_atomic(L.pretext_meta, {"computed": True, "seconds": out["seconds"], "sha256": out["pretext"]["sha256"]})
    say(
        f"pretext: rotation task ({p.pretext.epochs} epochs) and {info['n_pool']} pretext losses in {out['seconds']:.1f} s"
    )
    return {"computed": True, **out}


@flow(name="report", validate_parameters=True)
def report(params: Params, root: str = ".") -> dict[str, Any]:
    """Per-round table, ``reports/metrics.json``, ``rounds.csv`` and the PNG plots, also in MLflow."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    p, L = params, Layout(Path(root))
    remove_stale_temps(L.reports, min_age=60)  # what a killed report left (older than any live write)
    state = ExperimentState.load(L.state_of(p))
    run_id = state.tracking.get("mlflow_run_id")
    rows, metrics = write_reports(state, L, run_id)
    if run_id:
        tracking.finish(run_id)
    say()
    say(format_table(rows))
    say()
    say(
        describe_results(
            state, L, name=p.experiment.name, tracking_uri=tracking.tracking_uri(), human=p.oracle.name == "human"
        )
    )
    return metrics


@flow(name="alcore-pipeline", validate_parameters=True)
def pipeline(params: Params, fresh: bool = False, root: str = ".", discard_labels: bool = False) -> dict[str, Any]:
    """All stages in order: prepare, encoder, features, pretext, active_learning, report. With people as
    the oracle (``oracle.name: human``) one labeling cycle takes active_learning's place: it exports
    the first batch, or ingests what came back and exports the next one."""
    rearm()  # SIGTERM / Ctrl-C stop it promptly (Prefect's own SIGTERM handler is in place now)
    info = prepare(params, root=root)
    check_budget(params.al, info["n_pool"])  # before any training, not after it
    check_oracle(params.oracle, info.get("n_unlabeled", 0))
    encoder(params, root=root)
    features(params, root=root)
    pretext(params, root=root)
    if params.oracle.name == "human":
        labeling_cycle(params, fresh=fresh, root=root, discard_labels=discard_labels)
    else:
        active_learning(params, fresh=fresh, root=root)
    return report(params, root=root)


def run_stage(
    params: Params, *, stage: str = "all", fresh: bool = False, root: str = ".", discard_labels: bool = False
) -> Any:
    """Run one stage (or ``all``) after checking every name in ``params``."""
    from alcore.errors import AlcoreError

    if stage not in (*STAGES, "all"):
        raise AlcoreError(f"unknown stage {stage!r}. Allowed: {', '.join((*STAGES, 'all'))}.")
    check_params(params)
    if stage == "all":
        return pipeline(params, fresh=fresh, root=root, discard_labels=discard_labels)
    if stage == "active_learning":
        return active_learning(params, fresh=fresh, root=root)
    stages = {"prepare": prepare, "encoder": encoder, "features": features, "pretext": pretext, "report": report}
    return stages[stage](params, root=root)


@flow(name="alcore-run", validate_parameters=True)
def run_project(
    params_file: str = "params.yaml", overrides: list[str] | None = None, stage: str = "all", fresh: bool = False
) -> Any:
    """What a deployment runs (``prefect.yaml``): ``params_file`` with ``key=value`` ``overrides``,
    read in the working directory the deployment's pull step sets, then :func:`run_stage`."""
    if stage not in (*STAGES, "all"):
        raise ConfigError(problem(f"stage={stage!r}", ", ".join((*STAGES, "all"))))
    return run_stage(load_params(params_file, overrides or []), stage=stage, fresh=fresh)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.pipeline STAGE [--params params.yaml] [--set key=value ...] [--fresh]``
    (what dvc.yaml runs)."""

    def options(ap: Any) -> None:
        ap.add_argument("stage", choices=(*STAGES, "all"), help="the stage to run")
        ap.add_argument("--fresh", action="store_true", help="archive the experiment's saved state and start over")

    return flow_main("python -m flows.pipeline", argv, lambda p, a: run_stage(p, stage=a.stage, fresh=a.fresh), options)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "STAGES",
    "pipeline",
    "prepare",
    "encoder",
    "features",
    "pretext",
    "report",
    "run_project",
    "run_stage",
    "load_params",
]

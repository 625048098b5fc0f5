"""The ``alcore`` command line.

``alcore run`` runs the pipeline through Prefect (imported only then: the library itself never
needs it); ``alcore show`` prints an experiment's per-round table from its saved state.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from alcore.errors import AlcoreError

app = typer.Typer(
    help="Efficient active learning on pre-trained vision models: proxy selection on pre-computed features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The parameters file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a parameter, e.g. --set al.rounds=5 --set al.strategy=entropy."),
]


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run_flow(params: Path, set_: list[str] | None, module: str, name: str, **kwargs: object) -> None:
    """Load the parameters, import ``module.name`` (a Prefect flow: only now is Prefect imported)
    and run it on them; an AlcoreError anywhere ends the command with its message."""
    import importlib

    from alcore.config import load_params

    try:
        p = load_params(params, set_ or [])
    except AlcoreError as e:
        _fail(e)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:  # pragma: no cover - depends on the install
        _fail(RuntimeError(f"the pipeline extra is not installed ({e}); run `uv sync --extra pipeline`"))
    try:
        fn(p, **kwargs)
    except AlcoreError as e:
        _fail(e)


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    stage: Annotated[
        str, typer.Option(help="One stage (prepare, encoder, features, pretext, active_learning, report) or all.")
    ] = "all",
    fresh: Annotated[bool, typer.Option(help="Archive this experiment's saved state and start over.")] = False,
) -> None:
    """Run the pipeline (or one stage) as Prefect flows; resumes an interrupted experiment."""
    _run_flow(params, set_, "flows.pipeline", "run_stage", stage=stage, fresh=fresh)


@app.command()
def compare(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Compare pipelines x strategies x seeds (params.yaml `compare`); writes reports/compare/."""
    _run_flow(params, set_, "flows.compare", "compare")


@app.command()
def as3l(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    labels: Annotated[int | None, typer.Option(help="Labels to buy in one shot (default: al.initial).")] = None,
) -> None:
    """AS3L for few labels: one-shot selection, priors, prior-guided FixMatch, and the prior baseline."""
    _run_flow(params, set_, "flows.as3l", "as3l", labels=labels)


@app.command()
def show(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print an experiment's per-round table and totals from its saved state."""
    from alcore.config import load_params
    from alcore.experiment import ExperimentState
    from alcore.layout import Layout
    from alcore.ledger import format_table
    from alcore.report import describe_results, round_rows

    try:
        p = load_params(params, set_ or [])
        path = Layout().state(p.experiment.name)
        if not path.exists():
            raise AlcoreError(
                f"No saved state for experiment {p.experiment.name!r} at {path}. Fix: run `alcore run` first."
            )
        state = ExperimentState.load(path)
    except AlcoreError as e:
        _fail(e)
    typer.echo(format_table(round_rows(state)))
    typer.echo()
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    typer.echo(describe_results(state, Layout(), name=p.experiment.name, tracking_uri=uri))


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="strategies, datasets, encoders, modes or triggers")] = "strategies",
) -> None:
    """List the registered strategies, datasets, encoder architectures or training modes."""
    if what == "strategies":
        from alcore.strategies import STRATEGIES

        names = STRATEGIES.names()
    elif what == "datasets":
        from alcore.datasets import DATASETS

        names = DATASETS.names()
    elif what == "encoders":
        from alcore.encoders import ARCHS

        names = ARCHS.names() + ["any timm model name (e.g. resnet50, vit_small_patch16_224)"]
    elif what == "modes":
        from alcore.training import MODES, SEMI_MODES

        names = ["auto", *MODES, *SEMI_MODES]
    elif what == "triggers":
        from alcore.realign import TRIGGERS

        names = TRIGGERS.names()
    else:
        _fail(AlcoreError(f"cannot list {what!r}. Allowed: strategies, datasets, encoders, modes, triggers."))
    for n in names:
        typer.echo(n)


@app.command()
def check(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Validate the parameters file and print the resolved parameters."""
    import yaml

    from alcore.config import load_params

    try:
        p = load_params(params, set_ or [])
    except AlcoreError as e:
        _fail(e)
    typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))


@app.command()
def ui(
    which: Annotated[str, typer.Argument(help="prefect or mlflow")] = "prefect",
    port: Annotated[int | None, typer.Option(help="Port (default 4200 for Prefect, 5000 for MLflow).")] = None,
) -> None:
    """Start the Prefect or MLflow UI on 127.0.0.1 for this project."""
    from flows._env import configure

    configure()
    if which == "prefect":
        cmd = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port or 4200)]
    elif which == "mlflow":
        cmd = [
            "mlflow",
            "ui",
            "--host",
            "127.0.0.1",
            "--port",
            str(port or 5000),
            "--backend-store-uri",
            os.environ["MLFLOW_TRACKING_URI"],
        ]
    else:
        _fail(AlcoreError(f"unknown UI {which!r}. Allowed: prefect, mlflow."))
    exe = shutil.which(cmd[0])
    if exe is None:
        _fail(AlcoreError(f"{cmd[0]} is not installed. Fix: uv sync --extra pipeline."))
    typer.echo(" ".join(cmd))
    os.execv(exe, cmd)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)  # click returns the code of an Exit here
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except SystemExit as e:  # click's usage errors
        return int(e.code or 0)
    except Exception as e:  # click exceptions print themselves
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

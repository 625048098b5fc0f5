"""The ``alcore`` command line.

``alcore run`` runs the pipeline through Prefect (imported only then: the library itself never
needs it); ``alcore show`` prints an experiment's per-round table from its saved state.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from alcore.errors import AlcoreError

if TYPE_CHECKING:
    from alcore.config import Params
    from alcore.layout import Layout
    from alcore.run_state import ExperimentState

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


def _fail(err: Exception) -> NoReturn:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    refusals = sys.modules.get("flows._env")
    log = getattr(refusals, "_REFUSALS", None) if refusals else None
    if log is not None and log.written:  # a flow logged this refusal with its traceback
        typer.echo(f"(the traceback is in {log.path})", err=True)
    raise typer.Exit(code=2)


def _stopped(e: KeyboardInterrupt) -> NoReturn:
    """A run stopped by SIGTERM or SIGINT: one line with the command that resumes it."""
    stop = sys.modules.get("flows._stop")
    if stop is None or not isinstance(e, stop.RunStopped):
        raise e
    typer.secho(stop.stopped_message(e), fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code=e.exit_code)


def _flow(module: str, name: str) -> Any:
    """``module.name`` from ``flows/`` (imported only now: the library never needs Prefect)."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:  # pragma: no cover - depends on the install
        _fail(RuntimeError(f"the pipeline extra is not installed ({e}); run `uv sync --extra pipeline`"))


def _params(params: Path, set_: list[str] | None) -> Params:
    from alcore.config import load_params

    try:
        return load_params(params, set_ or [])
    except AlcoreError as e:
        _fail(e)


def _check(p: Params) -> None:
    from alcore.checks import check_params

    check_params(p)


#: The arguments of this command line (``main``'s), for the command that resumes a stopped run.
_ARGS: list[str] = []


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; an alcore error is printed with its fix (exit code 2). Flows log such a
    refusal with its traceback: that goes to a log file, not the console (flows._env). A run
    stopped by SIGTERM or Ctrl-C says how to resume it (exit code 128 + the signal)."""
    if "prefect" in sys.modules:
        _flow("flows._env", "quiet_refusals")()
        stop = importlib.import_module("flows._stop")
        stop.arm(resume=stop.resume_command("alcore", _ARGS))
    try:
        return fn(*args, **kwargs)
    except AlcoreError as e:
        _fail(e)
    except KeyboardInterrupt as e:
        _stopped(e)
    except Exception as e:
        hint = prefect_startup_hint(e)
        if hint is None:
            raise
        _flow("flows._env", "quiet_refusals")().keep(e)  # the traceback goes to the errors log
        _fail(AlcoreError(hint))


def prefect_startup_hint(err: BaseException) -> str | None:
    """What to set when Prefect's API could not be reached in time, or None for any other error.

    Without ``PREFECT_API_URL`` every command starts a temporary Prefect server; on a busy machine it
    can take minutes to answer (measured: 354 s and 524 s), and Prefect then raises a bare
    ``RuntimeError`` or an ``httpx`` timeout with a long traceback. The state is saved after every
    step, so the same command run again resumes.
    """
    startup = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "20")
    request = os.environ.get("PREFECT_API_REQUEST_TIMEOUT", "60")
    api = os.environ.get("PREFECT_API_URL")
    rerun = "then run the same command again (it resumes where it stopped)"
    server = "or run one server for every command: `uv run prefect server start` in another terminal and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
    text = str(err)
    if isinstance(err, RuntimeError) and "ephemeral Prefect API server" in text:
        return (
            f"Prefect's temporary API server did not start within {startup} s (a busy machine?). "
            f"Fix: set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600 (now {startup}), {server}; {rerun}."
        )
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with Prefect
        return None
    if isinstance(err, httpx.TimeoutException | httpx.ConnectError):
        where = f"the Prefect API at {api}" if api else "Prefect's temporary API server"
        what = "did not answer in time" if isinstance(err, httpx.TimeoutException) else "refused the connection"
        fix = (
            f"set PREFECT_API_REQUEST_TIMEOUT=300 (now {request})"
            + ("" if api else f" and PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600 (now {startup})")
            + (
                f", and check that the server at {api} is running (`uv run prefect server start`)"
                if api
                else f", {server}"
            )
        )
        return f"{where} {what} ({type(err).__name__}: {text or 'no detail'}). Fix: {fix}; {rerun}."
    return None


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    stage: Annotated[
        str, typer.Option(help="One stage (prepare, encoder, features, pretext, active_learning, report) or all.")
    ] = "all",
    fresh: Annotated[bool, typer.Option(help="Archive this experiment's saved state and start over.")] = False,
    discard_labels: Annotated[
        bool,
        typer.Option(
            help="With --fresh on an experiment people labeled: start over anyway (the labels stay in the archived state)."
        ),
    ] = False,
) -> None:
    """Run the pipeline (or one stage) as Prefect flows; resumes an interrupted experiment."""
    p = _params(params, set_)
    _call(_check, p)  # every name and parameter, before Prefect is even imported
    stages = _flow("flows.pipeline", "STAGES")
    if stage not in (*stages, "all"):
        _fail(AlcoreError(f"unknown stage {stage!r}. Allowed: {', '.join((*stages, 'all'))}."))
    _call(_flow("flows.pipeline", "run_stage"), p, stage=stage, fresh=fresh, discard_labels=discard_labels)


@app.command()
def compare(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Compare pipelines x strategies x seeds (params.yaml `compare`); writes reports/compare/."""
    _call(_flow("flows.compare", "compare"), _params(params, set_))


@app.command()
def as3l(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    labels: Annotated[int | None, typer.Option(help="Labels to buy in one shot (default: al.initial).")] = None,
) -> None:
    """AS3L for few labels: one-shot selection, priors, prior-guided FixMatch, and the prior baseline."""
    _call(_flow("flows.as3l", "as3l"), _params(params, set_), labels=labels)


@app.command()
def show(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print an experiment's per-round table and totals from its saved state."""
    from alcore.config import load_params
    from alcore.layout import Layout
    from alcore.ledger import format_table
    from alcore.report import describe_results, format_monitor, round_rows
    from alcore.run_state import ExperimentState

    try:
        p = load_params(params, set_ or [])
        path = Layout().state_of(p)
        if not path.exists():
            raise AlcoreError(
                f"No saved state for experiment {p.experiment.name!r} at {path}. Fix: run `alcore run` first."
            )
        state = ExperimentState.load(path)
    except AlcoreError as e:
        _fail(e)
    rows = round_rows(state)
    typer.echo(format_table(rows))
    typer.echo()
    judged = format_monitor(rows, state.final)
    if judged:
        typer.echo(judged)
        typer.echo()
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    typer.echo(
        describe_results(state, Layout(), name=p.experiment.name, tracking_uri=uri, human=p.oracle.name == "human")
    )


@app.command("list")
def list_(
    what: Annotated[
        str, typer.Argument(help="strategies, pipelines, datasets, encoders, modes or triggers")
    ] = "strategies",
) -> None:
    """List the registered strategies, pipelines, datasets, encoder architectures, training modes or triggers."""
    if what == "strategies":
        from alcore.strategies import STRATEGIES

        names = STRATEGIES.names()
    elif what == "pipelines":
        from alcore.rounds import PIPELINES

        names = PIPELINES.names()
    elif what == "datasets":
        from alcore.datasets import DATASETS

        names = DATASETS.names()
    elif what == "encoders":
        from alcore.encoders import ARCHS, OFFLINE_WEIGHTS

        width = max(map(len, ARCHS.names() + OFFLINE_WEIGHTS.names()))
        names = [f"{n:<{width}}  ours: encoder.weights=<file>, or SimCLR on the pool" for n in ARCHS.names()]
        names += [
            f"{n:<{width}}  {OFFLINE_WEIGHTS.get(n).describe()}: encoder.pretrained=package (or true)"
            for n in OFFLINE_WEIGHTS.names()
        ]
        names.append(
            "any timm model name (e.g. resnet50, vit_small_patch16_224): encoder.pretrained=hub (needs internet), "
            "encoder.weights=<file>, or random init + SimCLR"
        )
    elif what == "modes":
        from alcore.training import MODES, SEMI_MODES

        names = ["auto", *MODES, *SEMI_MODES]
    elif what == "triggers":
        from alcore.realign import TRIGGERS

        names = TRIGGERS.names()
    else:
        _fail(
            AlcoreError(f"cannot list {what!r}. Allowed: strategies, pipelines, datasets, encoders, modes, triggers.")
        )
    for n in names:
        typer.echo(n)


@app.command()
def check(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Validate the parameters file (values, every registry name and the parameters each entry
    declares) and print the resolved parameters."""
    import yaml

    p = _params(params, set_)
    _call(_check, p)
    typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))


label_app = typer.Typer(
    help="Labeling with people (oracle.name=human): run a cycle, see where it stands, check a file.",
    no_args_is_help=True,
)
app.add_typer(label_app, name="label")


@label_app.command("cycle")
def label_cycle(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """One labeling cycle now: ingest the inbox; once the open batch is labeled, retrain, select and
    export the next batch (what `alcore serve` runs on a schedule). Exit status 1 when rows were
    refused (the cycle did its work; the rows are listed)."""
    out = _call(_flow("flows.labeling", "run_cycle"), _params(params, set_))
    for message in out.get("refused", []):
        typer.secho(f"refused: {message}", fg=typer.colors.YELLOW, err=True)
    if out.get("refused"):
        raise typer.Exit(code=1)


@label_app.command("setup")
def label_setup(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print what Label Studio needs to show this experiment's images (labeling.image_url) and how
    its answers come back."""
    from alcore.labeling import label_studio_setup
    from alcore.layout import Layout

    p = _params(params, set_)
    L = Layout()
    name = p.experiment.name
    typer.echo(
        _call(
            label_studio_setup,
            image_url=p.labeling.image_url,
            image_root=p.labeling.image_root,
            embed_max_side=p.labeling.embed_max_side,
            outbox=L.outbox(name).resolve(),
            inbox=L.inbox(name).resolve(),
            settle_seconds=p.labeling.settle_seconds,
        )
    )


def _labeling_state(params: Path, set_: list[str] | None) -> tuple[Params, Layout, ExperimentState]:
    from alcore.config import load_params
    from alcore.layout import Layout
    from alcore.run_state import ExperimentState

    p = load_params(params, set_ or [])  # an error here is reported by the caller
    L = Layout()
    path = L.state_of(p)
    if not path.exists():
        raise AlcoreError(
            f"No saved state for experiment {p.experiment.name!r} at {path}. Fix: run `alcore run` (or `alcore label cycle`) first."
        )
    return p, L, ExperimentState.load(path)


@label_app.command("status")
def label_status(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Where labeling stands: the open batch, labels waiting, files in the inbox, refused rows."""
    from alcore.labeling import inbox_files

    try:
        p, L, st = _labeling_state(params, set_)
    except AlcoreError as e:
        _fail(e)
    name = p.experiment.name
    b = st.labeling.open_batch
    t = st.ledger.totals()
    typer.echo(f"experiment {name}: {st.labels.n_labeled} labels, ${t['label_usd']:.2f} for labels")
    if b is None:
        typer.echo("no batch exported yet: run `alcore label cycle`")
    else:
        done = int(st.answered(b.ids).sum())
        waiting = st.requested_ids().size
        typer.echo(f"open batch {b.round}: {done}/{b.ids.size} labeled; {waiting} requested id(s) await labels")
        typer.echo(f"job:   {L.outbox(name) / b.name}.csv  (and .labelstudio.json)")
    typer.echo(f"inbox: {L.inbox(name)} ({len(inbox_files(L.inbox(name)))} file(s) waiting)")
    for rec in st.labeling.imports[-5:]:
        typer.echo(
            f"  {rec['at']} {rec['file']}: {rec['committed']} committed, {rec.get('corrected', 0)} corrected, "
            f"{rec['already']} known, {rec['rejected']} refused"
        )
        for line in [*rec["problems"][:5], *rec.get("conflicts", [])[:5], *rec.get("corrections", [])[:5]]:
            typer.echo(f"      {line}")
    if st.labeling.corrections:
        typer.echo(f"{len(st.labeling.corrections)} label(s) corrected so far (state.json: labeling.corrections)")
    if st.final:
        typer.echo(f"finished: final network test accuracy {st.final['accuracy']:.4f}")


@label_app.command("check")
def label_check(
    file: Annotated[Path, typer.Argument(help="A filled batch CSV or a Label Studio export (.csv, .json).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Validate an annotation file against the experiment without committing anything."""
    import json

    from alcore.labeling import import_annotations

    def check() -> None:
        p, L, st = _labeling_state(params, set_)
        requested = st.requested_ids()
        classes = json.loads(L.dataset.read_text())["classes"]
        kw = {"labels": st.answer_view(), "requested": requested, "classes": classes, "from_name": p.labeling.from_name}
        res = import_annotations(file, **kw, conflicts=p.labeling.conflicts)
        typer.echo(
            f"{file.name}: {res.ids.size} new label(s), {res.fixed_ids.size} correction(s), {res.already} known, "
            f"{res.unanswered} not labeled yet"
        )
        for line in [*res.conflicts, *res.corrections]:
            typer.echo(f"  {line}")
        res.raise_for_problems()

    _call(check)


@app.command()
def serve(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    cron: Annotated[str, typer.Option(help="When to run a labeling cycle (cron, server time).")] = "*/10 * * * *",
    name: Annotated[str, typer.Option(help="The deployment's name.")] = "labeling",
) -> None:
    """Serve the labeling cycle on a cron schedule through the Prefect server at PREFECT_API_URL
    (default http://127.0.0.1:4200/api; start it with `alcore ui prefect`). Runs until stopped."""
    import urllib.request

    from flows._env import configure

    p = _params(params, set_)
    configure()
    api = os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10):
            pass
    except OSError as e:
        _fail(
            AlcoreError(
                f"No Prefect server answers at {api} ({e}). Fix: start one with `alcore ui prefect` "
                "(in another shell), or set PREFECT_API_URL to yours."
            )
        )
    serve_cycle = _flow("flows.labeling", "serve_cycle")
    typer.echo(f"serving labeling_cycle/{name} on {cron!r} via {api}; watch it at {api.rsplit('/api', 1)[0]}")
    _call(serve_cycle, p, cron=cron, name=name, root=Path.cwd())


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
        # the UI's pages call the API at PREFECT_UI_API_URL, else PREFECT_API_URL (often :4200 from
        # the README's export): point them at this server's own port
        os.environ["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port or 4200}/api"
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
    # the venv's own script first (an un-activated venv has no PATH entry), then PATH
    beside = Path(sys.executable).with_name(cmd[0])
    exe = str(beside) if beside.is_file() else shutil.which(cmd[0])
    if exe is None:
        _fail(AlcoreError(f"{cmd[0]} is not installed. Fix: uv sync --extra pipeline."))
    typer.echo(" ".join(cmd))
    os.execv(exe, cmd)


def _usage_error(e: Exception) -> tuple[str, int] | None:
    """The one line for a command-line mistake (typer >= 0.29 raises its own exceptions, not
    click's), with what to try; None for anything else."""
    from typer.exceptions import TyperException

    try:
        import click

        usage: tuple[type[Exception], ...] = (TyperException, click.ClickException)
    except ImportError:  # pragma: no cover - typer without click
        usage = (TyperException,)
    if not isinstance(e, usage) or not hasattr(e, "format_message"):
        return None
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "alcore"
    message = e.format_message().strip()
    if not message:  # a group called without a command: its help was printed already
        return "", int(getattr(e, "exit_code", 2))
    return f"error: {message} Try '{path} --help'.", int(getattr(e, "exit_code", 2))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    _ARGS[:] = args
    try:
        # click returns the code of an Exit here
        rv = app(args=args, prog_name="alcore", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:
        line = _usage_error(e)
        if line is None:
            raise
        if line[0]:
            typer.secho(line[0], fg=typer.colors.RED, err=True)
        return line[1]


if __name__ == "__main__":
    sys.exit(main())

"""The Prefect UI as a person sees it: a labeling cycle's flow run and its tasks, in headless Chromium.

Starts ``prefect server start`` on 127.0.0.1 (a free port, a temporary PREFECT_HOME), runs a tiny
digits experiment with people as the oracle in a temporary project (``alcore run``: the first batch
goes out), answers that batch with the true labels, runs one more labeling cycle
(``alcore label cycle``: ingest, retrain, select, export), and saves Chromium's screenshot of that
flow run's page. The script fails unless the page is that run's (its rendered DOM names the run,
the flow, its state and task count) and its timeline drew the task runs.

    make ui-screenshot                                  # installs Debian's chromium if missing
    uv run python scripts/ui_screenshot.py --out docs/prefect-ui-labeling-cycle.png

Needs the ``chromium`` (or ``chromium-browser``) command; exits 3 when there is none.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from flows._server import prefect_server

REPO = Path(__file__).resolve().parents[1]

PARAMS = {
    "experiment": {"name": "people", "seed": 0, "device": "cpu", "progress": False},
    "data": {"name": "digits", "params": {"max_pool": 300, "max_test": 100}},
    "encoder": {"arch": "cifar_resnet8", "ssl": {"method": "simclr", "epochs": 1, "batch_size": 128}},
    "proxy": {"hidden": 64, "epochs": 30},
    "al": {"strategy": "margin", "initial": 10, "batch": 10, "rounds": 3},
    "oracle": {"name": "human", "price_per_label": 0.5},
    "train": {"mode": "lp"},
}
#: The flow, then the tasks its run must show.
EXPECTED = ("labeling_cycle", "ingest_labels", "train_proxy", "select", "predict_labels", "export_batch")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def call(api: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        api + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True, timeout=900)


def answer_open_batch(project: Path) -> int:
    """Fill in the open batch's CSV with the true labels (the annotator) and drop it in the inbox."""
    from alcore.datasets import load_dataset

    data = load_dataset("digits", **PARAMS["data"]["params"])
    truth = {int(i): data.classes[c] for i, c in zip(data.pool.ids, data.pool.labels, strict=True)}
    labeling = project / "runs" / "people" / "labeling"
    job = sorted((labeling / "outbox").glob("batch-*.csv"))[-1]
    with open(job, newline="") as fh:
        rows = [{**r, "label": truth[int(r["sample_id"])]} for r in csv.DictReader(fh)]
    (labeling / "inbox").mkdir(parents=True, exist_ok=True)
    with open(labeling / "inbox" / "annotator-1.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def screenshot(browser: str, url: str, out: Path, budget_ms: int) -> str:
    """Save the page's screenshot to ``out``; return its rendered DOM."""
    common = [
        browser,
        "--headless",
        "--no-sandbox",  # chromium refuses to run as root with its sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1600,1000",
        f"--virtual-time-budget={budget_ms}",
    ]
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [*common, f"--user-data-dir={profile}", f"--screenshot={out}", url],
            check=True,
            timeout=180,
            capture_output=True,
        )
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [*common, f"--user-data-dir={profile}", "--dump-dom", url],
            check=True,
            timeout=180,
            capture_output=True,
            text=True,
        ).stdout
    return dom


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "prefect-ui-labeling-cycle.png")
    ap.add_argument("--budget-ms", type=int, default=20000, help="virtual time Chromium gives the UI to render")
    args = ap.parse_args(argv)
    browser = chromium()
    if browser is None:
        print("no chromium: install Debian's package (make ui-screenshot does: apt-get install -y chromium)")
        return 3
    work = Path(tempfile.mkdtemp(prefix="alcore-ui-"))
    try:
        with prefect_server(work / "prefect-home") as api:
            env = {
                **os.environ,
                "PREFECT_HOME": str(work / "prefect-home"),
                "PREFECT_API_URL": api,
                "PREFECT_LOGGING_LEVEL": "INFO",
                "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "true",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "TQDM_DISABLE": "1",
                "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                "ALCORE_MLFLOW_ARTIFACTS": str(work / "mlartifacts"),
            }
            rc = capture(browser, api, work, env, args.out, args.budget_ms)
            if os.environ.get("ALCORE_UI_KEEP"):  # look at it yourself before the server stops
                input(f"the server runs at {api.removesuffix('/api')}; press Enter to stop it ")
            return rc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def capture(browser: str, api: str, work: Path, env: dict[str, str], out: Path, budget_ms: int) -> int:
    """Run the experiment against the server at ``api`` and screenshot the second cycle's run."""
    import yaml

    project = work / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    alcore = [sys.executable, "-m", "alcore.cli"]
    run([*alcore, "run"], project, env)  # prepare, encoder, features, cycle 1 (exports batch 1), report
    print(f"annotated {answer_open_batch(project)} images", flush=True)
    run([*alcore, "label", "cycle"], project, env)  # ingest, retrain, select, export batch 2
    runs = call(
        api,
        "/flow_runs/filter",
        {"flows": {"name": {"any_": ["labeling_cycle"]}}, "sort": "START_TIME_DESC", "limit": 1},
    )
    flow_run = runs[0]  # type: ignore[index]
    assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
    tasks = call(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run["id"]]}}})
    names = sorted({t["name"].rsplit("-", 1)[0] for t in tasks})  # type: ignore[union-attr]
    url = f"{api.removesuffix('/api')}/runs/flow-run/{flow_run['id']}"
    out.parent.mkdir(parents=True, exist_ok=True)
    dom = screenshot(browser, url, out, budget_ms)
    print(f"{url} -> {out} ({out.stat().st_size} bytes); task runs: {', '.join(names)}")
    return verify(out, dom, flow_run["name"], len(tasks), names)  # type: ignore[arg-type]


def verify(png: Path, dom: str, run_name: str, n_tasks: int, task_names: list[str]) -> int:
    """The page is the flow run's (its DOM names the run, the flow, its state and its task count)
    and its timeline drew the task runs (the graph is a canvas: count its green task bars)."""
    import numpy as np
    from PIL import Image

    problems = [f"the API's task runs lack {t}" for t in EXPECTED[1:] if t not in task_names]
    for text in (run_name, EXPECTED[0], "Completed", f"{n_tasks} Task runs"):
        if text not in dom:
            problems.append(f"the page does not say {text!r}")
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
    graph = rgb[100:480, 300:]  # the timeline, right of the menu (window 1600 x 1000)
    green = (graph[..., 1] > 130) & (graph[..., 0] < 80) & (graph[..., 2] < 110)  # a completed task's bar
    if green.sum() < 1500:
        problems.append(f"the timeline shows almost no task bars ({int(green.sum())} green pixels)")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

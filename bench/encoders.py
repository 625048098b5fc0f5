"""The default experiment on a pretrained backbone: input size vs. accuracy and seconds, and the baseline.

``sizes``: the default experiment (params.yaml: EfficientNet-Lite0 ImageNet weights from the
installed package, digits, SVPp + margin, 20 + 9 x 20 labels, the final network) run once per
input size and feature level (``encoder.feature_level``) with ``alcore run`` in a fresh temporary project (its own Prefect and MLflow stores),
then each run scored by :func:`score_run`. ``--simclr`` adds the previous default (a CIFAR ResNet-20
pre-trained with SimCLR on the pool, 30 epochs) as a reference row.

``run``: score a finished run, e.g. the one ``make demo`` left in the project.

Every row reports, at the final budget: the proxy's test accuracy, the final network's, and the
obvious baseline on the same features and the same labeled ids (scikit-learn
``StandardScaler`` + ``LogisticRegression``), plus the same probe on random ids (mean +- std over
5 draws of as many labels: what active learning has to beat). Seconds are the run's ledger
(compute by phase) and its wall time. Run it alone (``/work/bin/heavy`` on shared machines).

Usage::

    uv run python bench/encoders.py sizes --sizes 32 64 96 --levels 3 null  # one alcore run per size x level
    uv run python bench/encoders.py sizes --sizes 32 --simclr       # with the SimCLR reference
    uv run python bench/encoders.py run --root . --name digits-margin
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._baseline import logreg_accuracy  # noqa: E402


def score_run(root: Path, name: str, n_random: int = 5) -> dict[str, Any]:
    """A finished run's accuracies at its final budget, against the linear probe on the same features."""
    import numpy as np

    from alcore.datasets import load_dataset
    from alcore.features import read_features

    state = json.loads((root / "runs" / name / "state.json").read_text())
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    info = json.loads((root / "data" / "dataset.json").read_text())
    data = load_dataset(info["name"], **info["params"])
    pool, test = read_features(root / "features" / "pool.parquet"), read_features(root / "features" / "test.parquet")
    truth_pool = dict(zip(np.asarray(data.pool.ids).tolist(), np.asarray(data.pool.labels).tolist(), strict=True))
    truth_test = dict(zip(np.asarray(data.test.ids).tolist(), np.asarray(data.test.labels).tolist(), strict=True))
    y_test = np.array([truth_test[int(i)] for i in test.ids])
    labeled = np.asarray(state["labels"]["labeled_ids"], dtype=np.int64)
    given = dict(zip(labeled.tolist(), state["labels"]["labels"], strict=True))
    row_of = {int(i): r for r, i in enumerate(pool.ids)}
    rows = np.array([row_of[int(i)] for i in labeled])
    same = logreg_accuracy(pool.X[rows], np.array([given[int(i)] for i in labeled]), test.X, y_test)
    rng = np.random.default_rng(0)
    rand = []
    for _ in range(n_random):
        r = rng.choice(len(pool.ids), size=len(labeled), replace=False)
        rand.append(logreg_accuracy(pool.X[r], np.array([truth_pool[int(i)] for i in pool.ids[r]]), test.X, y_test))
    seconds: dict[str, float] = {}
    for rec in state["ledger"]["rounds"]:
        for phase, s in rec["seconds"].items():
            seconds[phase] = seconds.get(phase, 0.0) + float(s)
    return {
        "labels": int(len(labeled)),
        "proxy": float(metrics["proxy_accuracy"]),
        "final": float(metrics["test_accuracy"]),
        "final_mode": metrics.get("final_mode"),
        "lr_same_ids": same,
        "lr_random_mean": float(np.mean(rand)),
        "lr_random_std": float(np.std(rand)),
        "seconds": seconds,
        "compute_seconds": float(metrics["compute_seconds"]),
        "encoder": json.loads((root / "models" / "encoder.json").read_text()).get("weights"),
        "dim": int(pool.X.shape[1]),
    }


def run_once(overrides: list[str], work: Path) -> tuple[Path, float]:
    """``alcore run`` with the repo's params.yaml and ``overrides`` in a fresh project folder."""
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(work / ".prefect" / "storage"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "ALCORE_MLFLOW_ARTIFACTS": str(work / "mlartifacts"),
        "TQDM_DISABLE": "1",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cmd = [sys.executable, "-m", "alcore.cli", "run", "--params", str(REPO / "params.yaml")]
    for o in ["experiment.progress=false", *overrides]:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return work, wall


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| setting | dim | extraction s | AL s | final training s | compute s | wall s | proxy | final net | "
        "LR same ids | LR random ids |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        s = r["seconds"]
        al = s.get("proxy_training", 0.0) + s.get("scoring", 0.0)
        lines.append(
            f"| {r['setting']} | {r['dim']} | {s.get('extraction', 0.0):.1f} | {al:.1f} | "
            f"{s.get('final_training', 0.0):.1f} | {r['compute_seconds']:.1f} | {r['wall']:.0f} | "
            f"{r['proxy']:.4f} | {r['final']:.4f} ({r['final_mode']}) | {r['lr_same_ids']:.4f} | "
            f"{r['lr_random_mean']:.4f} +- {r['lr_random_std']:.4f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sizes", help="the default experiment at several input sizes")
    s.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128])
    s.add_argument("--levels", nargs="+", default=["3"], help="encoder.feature_level values (null: the last features)")
    s.add_argument("--simclr", action="store_true", help="also the previous default: ResNet-20 + SimCLR")
    s.add_argument("--set", dest="overrides", action="append", default=[], help="more params overrides")
    r = sub.add_parser("run", help="score a finished run")
    r.add_argument("--root", type=Path, default=Path("."))
    r.add_argument("--name", default="digits-margin")
    args = ap.parse_args()

    if args.cmd == "run":
        row = score_run(args.root, args.name) | {"setting": str(args.root), "wall": float("nan")}
        print(table([row]))
        print(json.dumps(row, indent=2))
        return 0

    settings = [
        (f"{size} px, level {level}", [f"encoder.input_size={size}", f"encoder.feature_level={level}"])
        for size in args.sizes
        for level in args.levels
    ]
    if args.simclr:
        settings.append(
            (
                "cifar_resnet20 + SimCLR 30 ep",
                [
                    "encoder.arch=cifar_resnet20",
                    "encoder.pretrained=false",
                    "encoder.input_size=null",
                    "encoder.feature_level=null",
                ],
            )
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="alcore-bench-encoders-") as tmp:
        for i, (name, overrides) in enumerate(settings):
            root, wall = run_once([*overrides, *args.overrides], Path(tmp) / f"run{i}")
            row = score_run(root, "digits-margin") | {"setting": name, "wall": wall}
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

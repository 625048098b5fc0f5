"""Reports that say what they hold (issue 16): one seed has no spread, a comparison without
Standard AL has no target, the proxy's accuracy is on the plot, and DVC does not complain about
the comparison's outputs before it has run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alcore.compare import format_markdown, plot_curves, summarize

REPO = Path(__file__).resolve().parents[1]


def run(pipeline: str, seed: int, accs: list[float], proxy: list[float]) -> dict:
    return {
        "pipeline": pipeline,
        "strategy": "margin",
        "seed": seed,
        "curve": [{"labels": 10 * (i + 1), "accuracy": a} for i, a in enumerate(accs)],
        "proxy_curve": [{"labels": 10 * (i + 1), "accuracy": a} for i, a in enumerate(proxy)],
        "final_accuracy": accs[-1],
        "labels": 10 * len(accs),
        "seconds": {},
        "compute_seconds": 36.0,
        "sampling_seconds": 6.0,
        "realignments": 0,
    }


def test_one_seed_says_n_and_no_standard_run_says_so():
    s = summarize([run("svpp", 0, [0.5, 0.7], [0.4, 0.6])], price_per_label=0.1, price_per_hour=3.0)
    md = format_markdown(s)
    assert "± 0.00" not in md
    assert "| 10 | 50.00 (n=1) |" in md and "| svpp/margin | 70.00 (n=1) | no standard run |" in md
    assert "no target: this comparison has no standard run" in md and "not reached" not in md
    assert s["pipelines"][0]["target_accuracy"] is None


def test_several_seeds_give_mean_std_and_n_and_a_target():
    runs = [run("standard", k, [0.6, 0.8], [0.5, 0.7]) for k in range(2)] + [
        run("svpp", k, [0.5 + 0.1 * k, 0.79], [0.45, 0.75]) for k in range(2)
    ]
    md = format_markdown(summarize(runs, price_per_label=0.1, price_per_hour=3.0))
    assert "| 10 | 60.00 ± 0.00 (n=2) | 55.00 ± 5.00 (n=2) |" in md
    assert "target = 98% of Standard AL's final accuracy" in md
    assert "| svpp/margin | 79.00 ± 0.00 (n=2) | 20 |" in md


def test_the_accuracy_plot_shows_the_proxy_too(tmp_path, monkeypatch):
    import matplotlib.axes

    labels: list[str] = []
    real = matplotlib.axes.Axes.plot

    def plot(self, *a, **k):
        labels.append(k.get("label"))
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    s = summarize([run("svpp", 0, [0.5, 0.7], [0.4, 0.6])], price_per_label=0.1, price_per_hour=3.0)
    plot_curves(s, tmp_path / "acc.png")
    assert labels == ["svpp/margin: final network", "svpp/margin: proxy"]
    assert (tmp_path / "acc.png").stat().st_size > 1000


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dvc")
    return subprocess.run(
        [str(exe) if exe.is_file() else "dvc", *args], cwd=root, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
def test_dvc_shows_metrics_and_plots_without_failures_before_compare_ran(tmp_path):
    pytest.importorskip("dvc")
    root = tmp_path / "project"
    (root / "compare").mkdir(parents=True)
    for f in ("dvc.yaml", "params.yaml", "compare/dvc.yaml"):
        shutil.copy(REPO / f, root / f)
    assert dvc(root, "init", "--no-scm", "-q").returncode == 0
    # what `make demo` leaves: the main pipeline's reports, no comparison yet
    (root / "reports").mkdir()
    (root / "reports" / "metrics.json").write_text('{"labels": 200, "test_accuracy": 0.9}')
    (root / "reports" / "rounds.csv").write_text("labels_total,proxy_accuracy\n20,0.5\n40,0.7\n")
    from PIL import Image

    for name in ("accuracy_vs_labels.png", "cost_breakdown.png"):
        Image.new("RGB", (4, 4)).save(root / "reports" / name)
    metrics = dvc(root, "metrics", "show")
    plots = dvc(root, "plots", "show")
    assert "failed to load" not in metrics.stdout + metrics.stderr
    assert "reports/metrics.json" in metrics.stdout and "0.9" in metrics.stdout
    assert "failed to load" not in plots.stdout + plots.stderr and plots.returncode == 0

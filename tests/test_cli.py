import subprocess
import sys
from pathlib import Path

import yaml

from alcore.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_list_registries(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out.split()
    assert {"random", "margin", "entropy", "least_confidence"} <= set(out)
    assert main(["list", "datasets"]) == 0
    assert "digits" in capsys.readouterr().out
    assert main(["list", "nothing"]) == 2


def test_check_reports_bad_params_with_a_fix(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"al": {"rounds": -1}, "data": {"nmae": "digits"}}))
    assert main(["check", "--params", str(f)]) == 2
    err = capsys.readouterr().err
    assert "al.rounds" in err and "data.nmae" in err and "Fix:" in err
    assert main(["check", "--params", str(REPO / "params.yaml"), "--set", "al.rounds=3"]) == 0
    assert "rounds: 3" in capsys.readouterr().out


def test_run_refuses_unknown_names_before_any_work(tmp_path):
    for override, needle in (
        ("data.name=imagenet", "Unknown dataset 'imagenet'"),
        ("al.strategy=oracle", "Unknown strategy 'oracle'"),
        ("encoder.arch=resnet9000", "resnet9000"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "alcore.cli", "run", "--params", str(REPO / "params.yaml"), "--set", override],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 2, r.stdout + r.stderr
        assert needle in r.stderr and "Allowed" in r.stderr
        assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()  # nothing half-written


def test_show_without_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "--params", str(REPO / "params.yaml")]) == 2
    assert "run `alcore run` first" in capsys.readouterr().err


def test_budget_larger_than_the_pool_fails_before_any_training(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "alcore.cli", "run", "--params", str(REPO / "params.yaml"), "--set", "al.rounds=200"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "pool holds 1438" in r.stderr and "lower al.rounds" in r.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "runs").exists()

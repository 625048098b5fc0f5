from pathlib import Path

import pytest
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


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.name=imagenet", "Unknown dataset 'imagenet'"),
        ("al.strategy=marginn", "Unknown strategy 'marginn'"),
        ("al.strategy=oracle", "Unknown strategy 'oracle'"),
        ("encoder.arch=resnet9000", "resnet9000"),
        ("al.pipeline=svpq", "Unknown pipeline 'svpq'"),
        ("al.strategy_params={bogus: 1}", "takes no parameter 'bogus'"),
        ("data.params={max_pool: 0}", "max_pool=0"),
        ("al.trigger_params={min_labels: 1}", "min_labels=1"),
    ],
)
def test_check_and_run_refuse_bad_names_and_parameters_before_any_work(tmp_path, monkeypatch, capsys, override, needle):
    monkeypatch.chdir(tmp_path)
    for cmd in ("check", "run"):
        assert main([cmd, "--params", str(REPO / "params.yaml"), "--set", override]) == 2
        err = capsys.readouterr().err
        assert needle in err and ("Allowed" in err or "Fix" in err), err
    assert not any(tmp_path.iterdir())  # nothing half-written: not even data/


def test_check_and_run_refuse_a_parameter_outside_its_declared_constraints(tmp_path, monkeypatch, capsys):
    """probcover's purity is a fraction: 2.0 is refused in the first second, not after the encoder
    has trained and the features are extracted."""
    monkeypatch.chdir(tmp_path)
    sets = ["--set", "al.strategy=probcover", "--set", "al.strategy_params={purity: 2.0}"]
    for cmd in ("check", "run"):
        assert main([cmd, "--params", str(REPO / "params.yaml"), *sets]) == 2
        err = capsys.readouterr().err
        assert "strategy 'probcover': purity=2.0" in err and "Allowed: a number in (0, 1]" in err, err
        assert "Fix: set purity in al.strategy_params" in err
    assert not any(tmp_path.iterdir())


def test_list_pipelines(capsys):
    assert main(["list", "pipelines"]) == 0
    assert capsys.readouterr().out.split() == ["asvp", "standard", "svpp"]


def test_show_without_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "--params", str(REPO / "params.yaml")]) == 2
    assert "run `alcore run` first" in capsys.readouterr().err


def test_budget_larger_than_the_pool_fails_before_any_training(tmp_path, monkeypatch, capsys, prefect_harness):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--params", str(REPO / "params.yaml"), "--set", "al.rounds=200"]) == 2
    err = capsys.readouterr().err
    assert "pool holds 1438" in err and "lower al.rounds" in err
    assert not (tmp_path / "models").exists() and not (tmp_path / "runs").exists()

import subprocess
import sys
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


def test_every_command_line_mistake_is_one_line_with_a_suggestion(capsys):
    for argv, needle in (
        (["lst"], "No such command 'lst'. Did you mean 'list'?"),
        (["run", "--sett", "al.rounds=3"], "No such option: --sett (Possible options: --set, --stage)"),
        (["label", "cyc"], "No such command 'cyc'. Did you mean 'cycle'?"),
        (["show", "extra"], "unexpected extra argument"),
        (["run", "--fresh=3"], "does not take a value"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert err.startswith("error: ") and needle in err and "--help'" in err, err


def test_the_installed_command_prints_no_traceback_either(tmp_path):
    r = subprocess.run([sys.executable, "-m", "alcore.cli", "lst"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: No such command 'lst'. Did you mean 'list'? Try 'alcore --help'."
    ]


def test_ui_prefect_points_its_pages_at_its_own_port(monkeypatch):
    seen = {}
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")  # as the README exports it
    monkeypatch.delenv("PREFECT_UI_API_URL", raising=False)
    monkeypatch.setattr("os.execv", lambda exe, cmd: seen.setdefault("cmd", cmd))
    assert main(["ui", "prefect", "--port", "4211"]) == 0
    assert seen["cmd"][seen["cmd"].index("--port") + 1] == "4211"
    import os

    assert os.environ["PREFECT_UI_API_URL"] == "http://127.0.0.1:4211/api"


def test_label_setup_prints_the_exact_set_up(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = ["--params", str(REPO / "params.yaml"), "--set", "oracle.name=human"]
    assert main(["label", "setup", *params]) == 0
    out = capsys.readouterr().out
    assert "a stock Label Studio shows them, nothing to serve" in out and "label-config.xml" in out
    assert main(["label", "setup", *params, "--set", "labeling.image_url=/data/local-files/?d={relpath}",
                 "--set", "labeling.image_root=/srv/images"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/srv/images" in out
    assert "Add Source Storage > Local files: Absolute local path /srv/images" in out
    assert main(["label", "setup", *params, "--set", "labeling.image_url='{path}'"]) == 0
    assert "There was an issue loading URL" in capsys.readouterr().out  # the warning, before anyone meets it


@pytest.mark.slow
def test_prefect_server_too_slow_to_start_ends_in_what_to_set(tmp_path):
    """A temporary Prefect server that misses its start-up time (minutes on a busy machine) ends in
    one line naming the settings, not Prefect's traceback; nothing half-written. (Slow: a real
    server in a fresh process; the default suite checks the same path in process below.)"""
    import os

    # its own Prefect home: the server it starts and abandons never touches the session's database
    home = tmp_path / ".prefect"
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0", "PREFECT_HOME": str(home)}
    env["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "storage")
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run(
        [sys.executable, "-m", "alcore.cli", "run", "--params", str(REPO / "params.yaml"), "--stage", "prepare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    assert "Traceback" not in err, err
    assert "did not start within 0 s" in err and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600" in err
    assert "PREFECT_API_URL" in err and "run the same command again" in err
    log = Path(env["PREFECT_HOME"]) / "alcore-errors.log"
    assert f"(the traceback is in {log})" in err and "ephemeral Prefect API server" in log.read_text()
    assert not (tmp_path / "runs").exists()


def test_prefect_api_timeouts_name_the_setting(monkeypatch):
    import httpx

    from alcore.cli import prefect_startup_hint

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_REQUEST_TIMEOUT", "60")
    hint = prefect_startup_hint(httpx.ReadTimeout("timed out"))
    assert "PREFECT_API_REQUEST_TIMEOUT=300 (now 60)" in hint and "temporary API server did not answer" in hint
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    hint = prefect_startup_hint(httpx.ConnectError("refused"))
    assert "http://127.0.0.1:4200/api refused the connection" in hint and "prefect server start" in hint
    assert prefect_startup_hint(RuntimeError("something else")) is None
    assert prefect_startup_hint(ValueError("ephemeral Prefect API server")) is None


def test_a_flow_whose_prefect_server_did_not_start_is_one_line(monkeypatch, tmp_path, capsys):
    """The command line's path for Prefect's own start-up error (its exact wording in Prefect 3.8)."""
    import typer

    from alcore import cli

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

    def flow() -> None:
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

    with pytest.raises(typer.Exit) as exit_:
        cli._call(flow)
    assert exit_.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Prefect's temporary API server did not start within 120 s")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600" in err and "Traceback" not in err
    # the errors log of this process (its Prefect home when the log was first opened), as the message names it
    log = err.split("(the traceback is in ", 1)[1].split(")\n", 1)[0]
    assert log.endswith("alcore-errors.log") and "ephemeral Prefect API server" in Path(log).read_text()
    with pytest.raises(ValueError):  # any other error is not dressed up
        cli._call(lambda: (_ for _ in ()).throw(ValueError("a bug")))

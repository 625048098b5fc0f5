from pathlib import Path

import pytest

from alcore.config import Params, apply_overrides, load_params, parse_params
from alcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid_and_matches_defaults_where_documented():
    p = load_params(REPO / "params.yaml")
    assert p.data.name == "digits"
    assert p.al.schedule()[0] == p.al.initial
    assert len(p.al.schedule()) == p.al.rounds


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        parse_params({"al": {"rounds": 0, "strategi": "margin"}, "nope": 1})
    msg = str(e.value)
    assert "al.rounds" in msg and "al.strategi" in msg and "nope" in msg and "Fix:" in msg


def test_weights_and_pretrained_are_exclusive():
    with pytest.raises(ConfigError, match="either encoder.weights"):
        parse_params({"encoder": {"weights": "w.pth", "pretrained": True}})


def test_overrides_parse_yaml_values(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("al:\n  rounds: 3\n")
    p = load_params(f, ["al.rounds=5", "al.strategy=entropy", "data.params={max_pool: 100}"])
    assert p.al.rounds == 5 and p.al.strategy == "entropy" and p.data.params == {"max_pool": 100}
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["al.rounds"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="No parameters file"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("al: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_digest_tracks_sections():
    a, b = Params(), parse_params({"al": {"rounds": 3}})
    assert a.digest("data") == b.digest("data")
    assert a.digest("al") != b.digest("al")


def test_feature_runner_and_pools_are_checked():
    p = parse_params({"features": {"shards": 4, "runner": "dask", "workers": 2}})
    assert p.features.sharded and p.features.memory_budget_bytes == 2048 * 2**20
    assert not Params().features.sharded  # the default: one task in the flow's thread, as before
    with pytest.raises(ConfigError, match="features.runner"):
        parse_params({"features": {"runner": "ray"}})
    with pytest.raises(ConfigError, match="needs features.runner=dask"):
        parse_params({"features": {"address": "tcp://h:8786"}})
    with pytest.raises(ConfigError, match="features.shards"):
        parse_params({"features": {"shards": 0}})
    with pytest.raises(ConfigError, match="orchestration.gpu_pool"):
        parse_params({"orchestration": {"gpu_pool": "two words"}})
    with pytest.raises(ConfigError, match="orchestration.dispatch"):
        parse_params({"orchestration": {"dispatch": "cloud"}})


def test_where_the_work_runs_does_not_change_the_experiment():
    """A saved experiment resumes after changing the runner, shards, memory budget or pools."""
    from alcore.run_state import experiment_digest

    base = parse_params({})
    moved = parse_params(
        {
            "features": {"shards": 8, "runner": "dask", "workers": 4, "memory_budget_mb": 1},
            "orchestration": {"gpu_pool": "a100", "dispatch": "pools"},
        }
    )
    assert experiment_digest(base) == experiment_digest(moved)
    assert experiment_digest(base) != experiment_digest(parse_params({"features": {"batch_size": 64}}))


def test_an_option_added_later_keeps_saved_experiments_resumable():
    """A state saved before ``train.semi_head_init`` existed was digested without it: at its old
    behaviour (``random``) the digest is the one the older alcore wrote; ``probe`` is another
    experiment. The older digest is computed here as that alcore did, from the dump less the field."""
    import hashlib
    import json

    from alcore.run_state import experiment_digest

    base = parse_params({})
    d = base.model_dump(mode="json", exclude={"compare", "labeling", "orchestration"})
    d["al"]["audit"].pop("target", None)
    d["experiment"] = {k: v for k, v in d["experiment"].items() if k not in ("device", "progress")}
    d["features"] = {"batch_size": d["features"]["batch_size"]}
    assert d["train"].pop("semi_head_init") == "random"
    before = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert experiment_digest(base) == before
    assert experiment_digest(parse_params({"train": {"semi_head_init": "probe"}})) != before

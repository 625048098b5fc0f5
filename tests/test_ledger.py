"""CostLedger: accumulation, cumulative columns, money, persistence, the terminal table."""

from __future__ import annotations

import json

import pytest

from alcore.errors import ConfigError
from alcore.ledger import PHASES, CostLedger, format_table


def make_ledger() -> CostLedger:
    ledger = CostLedger(price_per_label=0.05, price_per_hour=3.0)
    ledger.record(0, "extraction", 1800.0)
    ledger.buy(1, 100)
    ledger.record(1, "proxy_training", 3000.0)
    ledger.record(1, "proxy_training", 600.0)  # accumulates
    ledger.set_metric(1, "test_accuracy", 0.8)
    ledger.buy(2, 60)
    ledger.buy(2, 40)
    ledger.record(2, "scoring", 360.0)
    ledger.record(2, "fine_tuning", 3240.0)
    ledger.set_metric(2, "test_accuracy", 0.85)
    return ledger


def test_the_worked_example() -> None:
    ledger = CostLedger(price_per_label=0.05, price_per_hour=3.0)
    ledger.buy(1, 100)
    ledger.record(1, "proxy_training", 3600.0)
    row = ledger.rows()[1]
    assert row["label_usd"] == pytest.approx(5.0)
    assert row["compute_usd"] == pytest.approx(3.0)
    assert row["total_usd"] == pytest.approx(8.0)
    assert ledger.totals()["total_usd"] == pytest.approx(8.0)


def test_rows_per_round_and_cumulative() -> None:
    rows = make_ledger().rows()
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["labels"] for r in rows] == [0, 100, 100]
    assert [r["labels_total"] for r in rows] == [0, 100, 200]
    assert rows[1]["seconds_proxy_training"] == 3600.0
    assert rows[2]["seconds_scoring"] == 360.0 and rows[2]["seconds_fine_tuning"] == 3240.0
    assert [r["compute_seconds"] for r in rows] == [1800.0, 3600.0, 3600.0]
    assert [r["compute_seconds_cum"] for r in rows] == [1800.0, 5400.0, 9000.0]
    assert [r["label_usd"] for r in rows] == pytest.approx([0.0, 5.0, 5.0])
    assert [r["label_usd_cum"] for r in rows] == pytest.approx([0.0, 5.0, 10.0])
    assert [r["compute_usd"] for r in rows] == pytest.approx([1.5, 3.0, 3.0])
    assert [r["compute_usd_cum"] for r in rows] == pytest.approx([1.5, 4.5, 7.5])
    assert [r["total_usd"] for r in rows] == pytest.approx([1.5, 8.0, 8.0])
    assert [r["total_usd_cum"] for r in rows] == pytest.approx([1.5, 9.5, 17.5])
    assert [r["test_accuracy"] for r in rows] == [None, 0.8, 0.85]
    for row in rows:
        assert all(f"seconds_{p}" in row for p in PHASES)


def test_totals() -> None:
    t = make_ledger().totals()
    assert t["labels"] == 200
    assert t["compute_seconds"] == 9000.0 and t["seconds_extraction"] == 1800.0
    assert t["label_usd"] == pytest.approx(10.0)
    assert t["compute_usd"] == pytest.approx(7.5)
    assert t["total_usd"] == pytest.approx(17.5)


def test_gaps_are_zero_rows() -> None:
    ledger = CostLedger(price_per_label=1.0, price_per_hour=0.0)
    ledger.buy(3, 5)
    rows = ledger.rows()
    assert [r["labels"] for r in rows] == [0, 0, 0, 5]
    assert rows[-1]["total_usd_cum"] == 5.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda lg: lg.record(1, "training", 1.0), "unknown cost phase 'training'.*extraction"),
        (lambda lg: lg.record(1, "scoring", -1.0), "seconds=-1.0"),
        (lambda lg: lg.record(1, "scoring", float("nan")), "seconds"),
        (lambda lg: lg.record(-1, "scoring", 1.0), "round=-1"),
        (lambda lg: lg.record(1.0, "scoring", 1.0), "round=1.0"),
        (lambda lg: lg.buy(0, 5), "round 0"),
        (lambda lg: lg.buy(1, -5), "n_labels=-5"),
        (lambda lg: lg.buy(1, 2.5), "n_labels=2.5"),
        (lambda lg: lg.set_metric(1, "total_usd", 1.0), "metric name"),
        (lambda lg: lg.set_metric(1, "acc", "high"), "acc="),
    ],
)
def test_validation(call, match) -> None:
    ledger = make_ledger()
    before = ledger.state_dict()
    with pytest.raises(ConfigError, match=match):
        call(ledger)
    assert ledger.state_dict() == before


@pytest.mark.parametrize("kw", [dict(price_per_label=-0.1), dict(price_per_hour=float("inf"))])
def test_prices_validated(kw) -> None:
    with pytest.raises(ConfigError, match="price"):
        CostLedger(**{"price_per_label": 0.05, "price_per_hour": 3.0, **kw})


def test_state_dict_round_trip_through_json() -> None:
    ledger = make_ledger()
    d = json.loads(json.dumps(ledger.state_dict()))
    twin = CostLedger.from_state_dict(d)
    assert twin.rows() == ledger.rows()
    assert twin.price_per_label == 0.05 and twin.price_per_hour == 3.0
    other = CostLedger(price_per_label=9.0, price_per_hour=9.0)
    other.load_state_dict(d)
    assert other.rows() == ledger.rows()


def test_load_refuses_garbage_and_changes_nothing() -> None:
    ledger = make_ledger()
    before = ledger.state_dict()
    bad = json.loads(json.dumps(before))
    bad["rounds"][1]["seconds"]["warp_drive"] = 1.0
    for d in ({"format": "x"}, {**before, "version": 2}, bad):
        with pytest.raises(ConfigError):
            ledger.load_state_dict(d)
    assert ledger.state_dict() == before


def test_format_table() -> None:
    text = format_table(make_ledger().rows())
    lines = text.splitlines()
    header = lines[0]
    for col in ("round", "labels", "test_accuracy", "extraction s", "label $", "total $"):
        assert col in header
    assert "pretraining" not in header and "reextraction" not in header  # all-zero phases
    assert len(lines) == 3 + 3 + 1  # header, rule, 3 rounds, rule, total
    assert lines[-1].split()[:2] == ["total", "200"]
    assert "17.50" in lines[-1]
    assert "0.8500" in lines[4] and "8.00" in lines[3]
    assert "-" in lines[2].split()[2]  # no accuracy in round 0
    assert len({len(line) for line in lines[:2]}) == 1


def test_format_table_without_metrics() -> None:
    ledger = CostLedger(price_per_label=0.05, price_per_hour=3.0)
    ledger.buy(1, 10)
    text = format_table(ledger.rows())
    assert "acc" not in text and "0.50" in text

"""The cost ledger: labels bought and compute seconds spent, per round, priced in dollars.

Total cost = labeling cost + compute cost, compute cost = price per hour x hours (Wen et al.,
"Feature Alignment: Rethinking Efficient Active Learning via Proxy in the Context of Pre-trained
Models", TMLR 2024, Figure 2, which prices a GPU hour at $3.00). The ledger stores only events
(seconds per phase, labels, metrics); dollars are derived from them when rows are read, and rounded
only when printed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alcore.errors import ConfigError, problem

__all__ = ["PHASES", "CostLedger", "format_table"]

#: Where compute time goes. Round 0 holds setup work done before the first label.
PHASES: tuple[str, ...] = (
    "pretraining",
    "extraction",
    "proxy_training",
    "scoring",
    "fine_tuning",
    "reextraction",
    "final_training",
)

_FORMAT = "alcore.CostLedger"
_VERSION = 1


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _check_round(round: object) -> int:
    if not _is_int(round) or round < 0:  # type: ignore[operator]
        raise ConfigError(
            problem(
                f"round={round!r}",
                allowed="an int >= 0 (0 = setup before the first label)",
                fix="pass the round number",
            )
        )
    return int(round)  # type: ignore[call-overload]


def _check_real(value: object, what: str, minimum: float | None = 0.0) -> float:
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if ok and minimum is not None:
        ok = float(value) >= minimum  # type: ignore[arg-type]
    if not ok:
        allowed = "a finite number" + (f" >= {minimum:g}" if minimum is not None else "")
        raise ConfigError(problem(f"{what}={value!r}", allowed=allowed, fix=f"pass a valid {what}"))
    return float(value)  # type: ignore[arg-type]


class CostLedger:
    """Labels and compute seconds per round, and any metrics recorded beside them.

    Args:
        price_per_label: dollars per label, >= 0.
        price_per_hour: dollars per compute hour, >= 0.

    >>> ledger = CostLedger(price_per_label=0.05, price_per_hour=3.0)
    >>> ledger.buy(1, 100)
    >>> ledger.record(1, "proxy_training", 3600.0)
    >>> ledger.totals()["total_usd"]
    8.0
    """

    def __init__(self, *, price_per_label: float, price_per_hour: float) -> None:
        self.price_per_label = _check_real(price_per_label, "price_per_label")
        self.price_per_hour = _check_real(price_per_hour, "price_per_hour")
        self._seconds: dict[int, dict[str, float]] = {}
        self._labels: dict[int, int] = {}
        self._audit: dict[int, int] = {}  # audit labels (alcore.estimate): paid, never trained on
        self._metrics: dict[int, dict[str, float]] = {}

    def __repr__(self) -> str:
        return (
            f"CostLedger(price_per_label={self.price_per_label!r}, "
            f"price_per_hour={self.price_per_hour!r}, rounds={self.n_rounds})"
        )

    @property
    def n_rounds(self) -> int:
        """The highest round with any entry (0 if none)."""
        seen = set(self._seconds) | set(self._labels) | set(self._audit) | set(self._metrics)
        return max(seen, default=0)

    # -- recording ------------------------------------------------------------------------------
    def record(self, round: int, phase: str, seconds: float) -> None:
        """Add ``seconds`` of compute to ``phase`` in ``round`` (calls accumulate)."""
        round = _check_round(round)
        if phase not in PHASES:
            raise ConfigError(
                problem(
                    f"unknown cost phase {phase!r}",
                    allowed=", ".join(PHASES),
                    fix="record the time under one of the phases",
                )
            )
        seconds = _check_real(seconds, "seconds")
        per_phase = self._seconds.setdefault(round, {})
        per_phase[phase] = per_phase.get(phase, 0.0) + seconds

    def buy(self, round: int, n_labels: int) -> None:
        """Add ``n_labels`` labels bought in ``round`` (>= 1; calls accumulate)."""
        round = _check_round(round)
        if round < 1:
            raise ConfigError(
                problem(
                    "labels bought in round 0",
                    allowed="rounds >= 1 (round 0 is setup before the first label)",
                    fix="record the first labels in round 1",
                )
            )
        if not _is_int(n_labels) or n_labels < 0:
            raise ConfigError(problem(f"n_labels={n_labels!r}", allowed="an int >= 0"))
        self._labels[round] = self._labels.get(round, 0) + int(n_labels)

    def buy_audit(self, round: int, n_labels: int) -> None:
        """Add ``n_labels`` audit labels bought in ``round``: paid like training labels, counted
        apart (the audit estimates accuracy; its labels are never trained on)."""
        round = _check_round(round)
        if round < 1 or not _is_int(n_labels) or n_labels < 0:
            raise ConfigError(problem(f"audit labels {n_labels!r} in round {round}", allowed="an int >= 0, round >= 1"))
        self._audit[round] = self._audit.get(round, 0) + int(n_labels)

    def set_metric(self, round: int, name: str, value: float) -> None:
        """Record a metric of ``round`` (e.g. ``"test_accuracy"``); a later call overwrites."""
        round = _check_round(round)
        reserved = set(_base_columns())
        if not isinstance(name, str) or not name or name in reserved:
            raise ConfigError(
                problem(
                    f"metric name {name!r}",
                    allowed="a non-empty string other than the ledger's own columns",
                    fix="rename the metric",
                )
            )
        self._metrics.setdefault(round, {})[name] = _check_real(value, name, minimum=None)

    # -- reading --------------------------------------------------------------------------------
    def metric_names(self) -> list[str]:
        """Metric names in the order they were first set."""
        names: dict[str, None] = {}
        for r in sorted(self._metrics):
            names.update(dict.fromkeys(self._metrics[r]))
        return list(names)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per round, 0 to the last round with an entry.

        Keys: ``round``; ``labels`` (training labels bought this round) and ``labels_total``;
        ``audit_labels`` and ``audit_labels_total`` (the audit's, paid too); ``seconds_<phase>``
        for every phase in :data:`PHASES`; ``compute_seconds``; ``label_usd``, ``compute_usd``,
        ``total_usd``; the cumulative ``compute_seconds_cum``, ``label_usd_cum``,
        ``compute_usd_cum``, ``total_usd_cum``; then every metric name (None in rounds without it).
        """
        metric_names = self.metric_names()
        out = []
        labels_total = audit_total = 0
        compute_s: list[float] = []
        label_usd: list[float] = []
        compute_usd: list[float] = []
        for r in range(self.n_rounds + 1):
            seconds = self._seconds.get(r, {})
            labels = self._labels.get(r, 0)
            audit = self._audit.get(r, 0)
            labels_total += labels
            audit_total += audit
            row: dict[str, Any] = {"round": r, "labels": labels, "labels_total": labels_total}
            row["audit_labels"], row["audit_labels_total"] = audit, audit_total
            for phase in PHASES:
                row[f"seconds_{phase}"] = seconds.get(phase, 0.0)
            compute_s.append(math.fsum(seconds.values()))
            label_usd.append((labels + audit) * self.price_per_label)
            compute_usd.append(compute_s[-1] / 3600.0 * self.price_per_hour)
            row["compute_seconds"] = compute_s[-1]
            row["compute_seconds_cum"] = math.fsum(compute_s)
            row["label_usd"] = label_usd[-1]
            row["label_usd_cum"] = math.fsum(label_usd)
            row["compute_usd"] = compute_usd[-1]
            row["compute_usd_cum"] = math.fsum(compute_usd)
            row["total_usd"] = label_usd[-1] + compute_usd[-1]
            row["total_usd_cum"] = math.fsum(label_usd) + math.fsum(compute_usd)
            for name in metric_names:
                row[name] = self._metrics.get(r, {}).get(name)
            out.append(row)
        return out

    def totals(self) -> dict[str, Any]:
        """Sums over all rounds: ``labels`` (training), ``audit_labels``, ``seconds_<phase>``,
        ``compute_seconds``, ``label_usd`` (training and audit labels), ``compute_usd``, ``total_usd``."""
        out: dict[str, Any] = {"labels": sum(self._labels.values()), "audit_labels": sum(self._audit.values())}
        for phase in PHASES:
            out[f"seconds_{phase}"] = math.fsum(s.get(phase, 0.0) for s in self._seconds.values())
        out["compute_seconds"] = math.fsum(out[f"seconds_{p}"] for p in PHASES)
        out["label_usd"] = (out["labels"] + out["audit_labels"]) * self.price_per_label
        out["compute_usd"] = out["compute_seconds"] / 3600.0 * self.price_per_hour
        out["total_usd"] = out["label_usd"] + out["compute_usd"]
        return out

    def check_paid(self, labeled_per_round: Mapping[int, int], *, where: str = "the state") -> None:
        """Refuse a ledger whose labels bought differ from the labels held, round by round.

        Every label is paid exactly once, in the round it was committed in; a ledger that says
        otherwise (an edited or mixed-up state file) would misprice the whole experiment.

        Args:
            labeled_per_round: ``{round: labeled samples}`` (``LabelState.counts_per_round()``).
            where: the file, for the message.

        Raises:
            ConfigError: naming each round that differs.
        """
        rounds = sorted(set(self._labels) | set(labeled_per_round))
        off = [r for r in rounds if self._labels.get(r, 0) != labeled_per_round.get(r, 0)]
        if off:
            detail = "; ".join(
                f"round {r}: {self._labels.get(r, 0)} paid, {labeled_per_round.get(r, 0)} labeled" for r in off[:5]
            )
            raise ConfigError(
                problem(
                    f"{where}: its cost ledger contradicts its labels ({sum(self._labels.values())} labels paid, "
                    f"{sum(labeled_per_round.values())} labeled; {detail})",
                    allowed="a ledger that paid each labeled sample once, in the round it was labeled in",
                    fix="restore the state file the run wrote (it is written atomically; an edited copy cannot be "
                    "trusted), or start over with --fresh (the old state is archived)",
                )
            )

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: prices and the recorded events per round."""
        rounds = sorted(set(self._seconds) | set(self._labels) | set(self._audit) | set(self._metrics))
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "price_per_label": self.price_per_label,
            "price_per_hour": self.price_per_hour,
            "rounds": [
                {
                    "round": r,
                    "labels": self._labels.get(r, 0),
                    **({"audit_labels": self._audit[r]} if r in self._audit else {}),
                    "seconds": dict(self._seconds.get(r, {})),
                    "metrics": dict(self._metrics.get(r, {})),
                }
                for r in rounds
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace prices and events with those of ``state``; on error nothing changes."""
        if (
            not isinstance(state, Mapping)
            or state.get("format") != _FORMAT
            or not isinstance(state.get("rounds"), Sequence)
        ):
            raise ConfigError(
                problem(
                    "not a cost-ledger dict",
                    allowed=f"the output of CostLedger.state_dict() (format {_FORMAT!r})",
                    fix="load the file the run saved",
                )
            )
        if state.get("version") != _VERSION:
            raise ConfigError(
                problem(
                    f"cost-ledger format version {state.get('version')!r}",
                    allowed=f"version {_VERSION}",
                )
            )
        fresh = CostLedger(
            price_per_label=state.get("price_per_label"),  # type: ignore[arg-type]
            price_per_hour=state.get("price_per_hour"),  # type: ignore[arg-type]
        )
        seen = set()
        for entry in state["rounds"]:
            if not isinstance(entry, Mapping):
                raise ConfigError(problem(f"cost-ledger round entry {entry!r}", allowed="a dict"))
            r = _check_round(entry.get("round"))
            if r in seen:
                raise ConfigError(problem(f"cost-ledger round {r} appears twice"))
            seen.add(r)
            for phase, seconds in dict(entry.get("seconds", {})).items():
                fresh.record(r, phase, seconds)
            if entry.get("labels", 0):
                fresh.buy(r, entry["labels"])
            if entry.get("audit_labels", 0):
                fresh.buy_audit(r, entry["audit_labels"])
            for name, value in dict(entry.get("metrics", {})).items():
                fresh.set_metric(r, name, value)
        self.price_per_label = fresh.price_per_label
        self.price_per_hour = fresh.price_per_hour
        self._seconds, self._labels, self._metrics = fresh._seconds, fresh._labels, fresh._metrics
        self._audit = fresh._audit

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> CostLedger:
        out = cls(price_per_label=0.0, price_per_hour=0.0)
        out.load_state_dict(state)
        return out


def _base_columns() -> list[str]:
    cols = ["round", "labels", "labels_total", "audit_labels", "audit_labels_total"]
    cols += [f"seconds_{p}" for p in PHASES]
    for c in ("compute_seconds", "label_usd", "compute_usd", "total_usd"):
        cols += [c, f"{c}_cum"]
    return cols


def format_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """A fixed-width text table of ledger rows, for a terminal.

    Columns: round, labels, the metrics (default: every metric whose name contains "acc"),
    seconds per phase (phases that are zero in every row are left out), compute seconds, label $,
    compute $, total $ and cumulative total $. A last line sums the rounds.

    Args:
        rows: the output of :meth:`CostLedger.rows`.
        metrics: metric columns to show, or None for the accuracy-like ones.
    """
    rows = list(rows)
    if metrics is None:
        base = set(_base_columns())
        seen = dict.fromkeys(k for r in rows for k in r)  # every row's keys, in first-seen order
        # the audit's estimates have their own table (alcore.report.format_monitor)
        metrics = [k for k in seen if k not in base and "acc" in k.lower() and not k.startswith("estimated_")]
    phases = [p for p in PHASES if any(r.get(f"seconds_{p}", 0.0) for r in rows)]

    # (header, key, format, summed in the total line)
    columns: list[tuple[str, str, str, bool]] = [("round", "round", "{}", False)]
    columns.append(("labels", "labels", "{}", True))
    if any(r.get("audit_labels") for r in rows):
        columns.append(("audit", "audit_labels", "{}", True))
    columns += [(m, m, "{:.4f}", False) for m in metrics]
    columns += [(f"{p} s", f"seconds_{p}", "{:.1f}", True) for p in phases]
    columns += [
        ("compute s", "compute_seconds", "{:.1f}", True),
        ("label $", "label_usd", "{:.2f}", True),
        ("compute $", "compute_usd", "{:.2f}", True),
        ("total $", "total_usd", "{:.2f}", True),
        ("cum total $", "total_usd_cum", "{:.2f}", False),
    ]

    def cell(fmt: str, value: Any) -> str:
        return "-" if value is None else fmt.format(value)

    body = [[cell(fmt, r.get(key)) for _, key, fmt, _ in columns] for r in rows]
    total = [cell(fmt, math.fsum(r.get(key) or 0 for r in rows)) if summed else "" for _, key, fmt, summed in columns]
    total[0] = "total"
    for k, (_, key, fmt, summed) in enumerate(columns):
        if summed and fmt == "{}":  # label counts: integers
            total[k] = str(sum(int(r.get(key) or 0) for r in rows))
    header = [c[0] for c in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *body, total, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, body), rule, line(total)])

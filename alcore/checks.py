"""Start-up checks: everything that can be refused before any work starts.

:func:`check_params` runs in the first second of ``alcore run`` (and ``alcore check``,
``alcore compare``, the labeling cycle): every registry name and every parameter against what its
entry declares (:mod:`alcore.registry`), file paths that must exist, and combinations that cannot
work. The checks that need the data (the budget against the pool, the oracle against unlabeled
images) and the features (their encoder) run right after the stage that makes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alcore.config import ALCfg, Params
from alcore.datasets import DATASETS
from alcore.encoders import ARCHS, load_encoder
from alcore.encoders.core import _is_timm_model
from alcore.errors import (
    BudgetExceededError,
    ConfigError,
    FeatureMismatchError,
    UnknownNameError,
    WeightsError,
    problem,
)
from alcore.features import FeatureSpec
from alcore.oracle import ORACLES, check_oracle
from alcore.realign import TRIGGERS
from alcore.rounds import PIPELINES
from alcore.strategies import STRATEGIES

__all__ = [
    "check_budget",
    "check_features_match_encoder",
    "check_oracle",
    "check_params",
    "pretext_needed",
    "run_strategies",
    "strategy_needs_pretext",
]


def check_budget(al: ALCfg, n_pool: int) -> None:
    """Refuse a schedule that asks for more labels than the pool holds."""
    total = sum(al.schedule())
    if al.audit.enabled:  # the audit's reserve is never selected
        reserve = al.audit.reserve_size(n_pool)
        if total > n_pool - reserve:
            raise BudgetExceededError(
                problem(
                    f"The budget schedule buys {total} labels but the pool holds {n_pool} samples, "
                    f"{reserve} of them in the audit's reserve (al.audit.reserve={al.audit.reserve})",
                    f"at most {n_pool - reserve} labels in all",
                    "lower al.rounds, al.batch or al.initial, or al.audit.reserve",
                )
            )
    if total > n_pool:
        raise BudgetExceededError(
            problem(
                f"The budget schedule buys {total} labels (al.initial={al.initial} + "
                f"{al.rounds - 1} x al.batch={al.batch}) but the pool holds {n_pool} samples",
                f"at most {n_pool} labels in all",
                "lower al.rounds, al.batch or al.initial",
            )
        )


def check_features_match_encoder(encoder_path: str | os.PathLike[str], spec: FeatureSpec) -> None:
    """Refuse features that another encoder (or other weights) computed."""
    enc = load_encoder(encoder_path)
    digest = enc.weights_digest()
    if spec.weights_digest != digest or spec.encoder_arch != enc.config.arch:
        raise FeatureMismatchError(
            problem(
                f"The features were computed by {spec.encoder_arch} with weights {spec.weights_digest}, but the encoder "
                f"at {encoder_path} is {enc.config.arch} with weights {digest}",
                fix="re-extract the features with this encoder (dvc repro, or alcore run --stage features)",
            )
        )


def strategy_needs_pretext(name: str) -> bool:
    """Whether the strategy registered as ``name`` reads ``pretext_loss``."""
    return "pretext_loss" in STRATEGIES.get(name).requires


def run_strategies(p: Any) -> list[str]:
    """Every strategy a run of ``p`` may select with: ``al.strategy`` and ``compare.strategies``."""
    return [p.al.strategy, *getattr(getattr(p, "compare", None), "strategies", [])]


def pretext_needed(p: Any) -> bool:
    """Whether this run needs the rotation pretext losses: ``pretext.when``, or (``auto``) whether
    ``al.strategy`` or a strategy of ``compare.strategies`` requires ``pretext_loss``."""
    if p.pretext.when != "auto":
        return p.pretext.when == "always"
    return any(strategy_needs_pretext(n) for n in run_strategies(p))


def _check_encoder(p: Params) -> None:
    if p.encoder.arch not in ARCHS and not _is_timm_model(p.encoder.arch):
        raise UnknownNameError(
            problem(
                f"Unknown encoder architecture {p.encoder.arch!r}",
                allowed=f"{', '.join(ARCHS.names())}, or any timm model name",
                fix="set encoder.arch (alcore list encoders)",
            )
        )
    if p.encoder.pretrained == "package":
        from alcore.encoders.pretrained import check_package_weights

        check_package_weights(p.encoder.arch)
    if p.encoder.weights and not Path(p.encoder.weights).is_file():
        raise WeightsError(
            problem(
                f"encoder.weights={p.encoder.weights!r} does not exist", fix="give the path of a local weights file"
            )
        )


def check_params(p: Params) -> None:
    """Check every registry name and its parameters, and every combination, before any work starts.

    A typo in a strategy name, or a parameter outside what a strategy, trigger or dataset declares,
    fails in a second, not after the encoder has trained.

    Raises:
        UnknownNameError: a name no registry holds (the message lists the valid ones).
        ConfigError: a parameter or a combination that cannot work (the message says the fix).
    """
    DATASETS.check(p.data.name, p.data.params)
    _check_encoder(p)
    PIPELINES.check(p.al.pipeline)
    STRATEGIES.check(p.al.strategy, p.al.strategy_params)
    for name in getattr(getattr(p, "compare", None), "strategies", []):
        STRATEGIES.check(name)
    TRIGGERS.check(p.al.trigger, p.al.trigger_params)
    ORACLES.check(p.oracle.name)
    if p.pretext.when == "never" and any(strategy_needs_pretext(n) for n in run_strategies(p)):
        raise ConfigError(
            problem(
                "pretext.when=never but a strategy of this run reads the pretext loss (pt4al)",
                allowed="pretext.when=auto or always with pt4al",
                fix="set pretext.when=auto",
            )
        )
    if p.al.pipeline == "asvp" and p.train.mode == "lp":
        raise ConfigError(
            problem(
                "al.pipeline=asvp realigns the features by fine-tuning the encoder, but train.mode=lp "
                "freezes it: every realignment would re-extract the same features and pay for it",
                allowed="train.mode auto, ft, lpft, fixmatch or as3l with asvp; lp with svpp or standard",
                fix="set train.mode=auto (or ft / lpft), or al.pipeline=svpp",
            )
        )

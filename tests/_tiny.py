"""A tiny experiment on digits that runs end to end in seconds on a CPU."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "experiment": {"name": "tiny", "seed": 0, "device": "cpu", "progress": False},
    "data": {"name": "digits", "params": {"max_pool": 300, "max_test": 100}},
    "encoder": {"arch": "cifar_resnet8", "ssl": {"method": "simclr", "epochs": 1, "batch_size": 128}},
    "features": {"batch_size": 128},
    "proxy": {"hidden": 64, "epochs": 30},
    "al": {"strategy": "margin", "initial": 10, "batch": 10, "rounds": 3},
    "oracle": {"price_per_label": 0.5},
    "train": {"mode": "lp", "ft_epochs": 1, "ft_min_steps": 2, "ft_max_steps": 2, "min_holdout": 4},
}


def tiny(**sections: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(TINY)
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def copy_stages(src: Path, dst: Path) -> Path:
    """Copy the stage outputs of ``src`` (the ``tiny_stages`` fixture) into the project root ``dst``."""
    for d in ("data", "models", "features"):
        shutil.copytree(src / d, dst / d)
    return dst

"""Where each stage writes, relative to the project root (the same paths ``dvc.yaml`` names).

An experiment whose labels people gave (``oracle.name: human``) lives under ``labels/<name>/``,
never under ``runs/``: ``runs/`` is the output of DVC's ``active_learning`` stage, which ``dvc repro``
deletes before the stage runs. Nothing alcore, DVC or ``make`` runs deletes or rebuilds ``labels/``.
Experiment locks live in ``.alcore/locks/`` for the same reason: a lock inside a folder that a
command removes does not keep a second run out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")
    runs_dir: str = "runs"
    labels_dir: str = "labels"

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset.json"

    @property
    def encoder(self) -> Path:
        return self.root / "models" / "encoder.safetensors"

    @property
    def encoder_meta(self) -> Path:
        """Sidecar of the encoder stage: its config and the seconds it took."""
        return self.root / "models" / "encoder.json"

    @property
    def features_meta(self) -> Path:
        """Sidecar of the features stage: specs and seconds per split."""
        return self.root / "features" / "features.json"

    def features(self, split: str) -> Path:
        return self.root / "features" / f"{split}.parquet"

    @property
    def pretext(self) -> Path:
        """Per-image rotation pretext losses (PT4AL), or a marker that they were not needed."""
        return self.root / "features" / "pretext.parquet"

    @property
    def pretext_meta(self) -> Path:
        return self.root / "features" / "pretext.json"

    @property
    def runs(self) -> Path:
        return self.root / self.runs_dir

    @property
    def labels(self) -> Path:
        """Experiments labeled by people: in no DVC output, removed by no command."""
        return self.root / self.labels_dir

    @property
    def locks(self) -> Path:
        """The experiment locks (``alcore.run_state.experiment_lock``), outside every output."""
        return self.root / ".alcore" / "locks"

    def run_dir(self, name: str, *, human: bool = False) -> Path:
        """``runs/<name>`` (a DVC output), or ``labels/<name>`` for labels people gave."""
        return (self.labels if human else self.runs) / name

    def state(self, name: str, *, human: bool = False) -> Path:
        return self.run_dir(name, human=human) / "state.json"

    def dir_of(self, p: Any) -> Path:
        """The folder of the experiment that parameters ``p`` describe (its oracle decides where)."""
        return self.run_dir(p.experiment.name, human=p.oracle.name == "human")

    def state_of(self, p: Any) -> Path:
        return self.dir_of(p) / "state.json"

    def labeling(self, name: str) -> Path:
        """The human oracle's hand-off: ``outbox/`` (labeling jobs), ``inbox/`` (annotations)."""
        return self.run_dir(name, human=True) / "labeling"

    def outbox(self, name: str) -> Path:
        return self.labeling(name) / "outbox"

    def inbox(self, name: str) -> Path:
        return self.labeling(name) / "inbox"

    def final_model(self, name: str, *, human: bool = False) -> Path:
        return self.run_dir(name, human=human) / "model.safetensors"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def compare(self) -> Path:
        """Outputs of the compare flow (its experiments live under ``compare/runs``)."""
        return self.reports / "compare"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def rounds_csv(self) -> Path:
        return self.reports / "rounds.csv"

    @property
    def accuracy_plot(self) -> Path:
        return self.reports / "accuracy_vs_labels.png"

    @property
    def cost_plot(self) -> Path:
        return self.reports / "cost_breakdown.png"

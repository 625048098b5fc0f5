"""Where each stage writes, relative to the project root (the same paths ``dvc.yaml`` names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")
    runs_dir: str = "runs"

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

    def run_dir(self, name: str) -> Path:
        return self.runs / name

    def state(self, name: str) -> Path:
        return self.run_dir(name) / "state.json"

    def labeling(self, name: str) -> Path:
        """The human oracle's hand-off: ``outbox/`` (labeling jobs), ``inbox/`` (annotations)."""
        return self.run_dir(name) / "labeling"

    def outbox(self, name: str) -> Path:
        return self.labeling(name) / "outbox"

    def inbox(self, name: str) -> Path:
        return self.labeling(name) / "inbox"

    def final_model(self, name: str) -> Path:
        return self.run_dir(name) / "model.safetensors"

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

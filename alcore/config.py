"""``params.yaml`` as validated pydantic models: one model per stage, ``extra="forbid"``.

Validated once at the flow entry; everything below receives explicit keyword arguments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from alcore.errors import ConfigError, problem


def _numeric(annotation: Any) -> bool:
    """Whether a field holds numbers (int, float, optionally None, or a list of them)."""
    if annotation in (int, float):
        return True
    return any(_numeric(a) for a in get_args(annotation) if a is not type(None))


class _Model(BaseModel):
    # .inf and .nan are refused (a price of .inf would make every total inf)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic turns true into 1; YAML reads yes/no/on/off/true/false as booleans
        values = v if isinstance(v, list) else [v]
        if any(isinstance(x, bool) for x in values) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("a number is required, not a boolean (YAML reads true/false/yes/no/on/off as booleans)")
        return v


#: 2**32 - 1: the largest seed every random generator used takes (numpy's legacy RandomState)
MAX_SEED = 2**32 - 1


class ExperimentCfg(_Model):
    name: str = "digits-margin"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    progress: bool = True

    @field_validator("name")
    @classmethod
    def _a_folder_under_runs(cls, v: str) -> str:
        # the experiment's folder is runs/<name>: "..", "/x" or ".hidden" would write elsewhere
        import re

        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", v):
            raise ValueError(
                "the experiment's folder name under runs/: 1-100 letters, digits, '.', '_' or '-', not starting "
                "with '.' (so never '.' or '..'), e.g. digits-margin"
            )
        return v


class DataCfg(_Model):
    name: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)


class SSLCfg(_Model):
    method: Literal["simclr", "none"] = "simclr"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.5, gt=0)
    projection_dim: int = Field(128, ge=1)


class EncoderCfg(_Model):
    arch: str = "cifar_resnet20"
    weights: str | None = None
    pretrained: bool | Literal["hub", "package"] = Field(
        False,
        description="false | true (timm's hub, else an installed package: alcore list encoders) | hub | package",
    )
    input_size: int | None = Field(None, ge=8)
    feature_level: int | None = Field(
        None, ge=0, description="timm models: pool this level of the feature pyramid (null: the last features)"
    )
    ssl: SSLCfg = SSLCfg()

    @model_validator(mode="after")
    def _one_source(self) -> EncoderCfg:
        if self.weights and self.pretrained:
            raise ValueError("give either encoder.weights (a local file) or encoder.pretrained, not both")
        return self

    @property
    def needs_ssl(self) -> bool:
        return not self.weights and not self.pretrained and self.ssl.method != "none"


class PretextCfg(_Model):
    """The rotation pretext task (PT4AL's per-image loss), trained on the unlabeled pool."""

    when: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: only when a strategy of this run needs the pretext loss (pt4al)"
    )
    init: Literal["encoder", "scratch"] = Field(
        "encoder", description="start the rotation predictor from the pipeline's encoder, or from random weights"
    )
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1, description="images per step (each gives 4 rotations)")
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)


class FeaturesCfg(_Model):
    """Feature extraction (the ``features`` stage, ASVP's and Standard AL's re-extractions) and reading.

    Only ``batch_size`` can change the features' content; ``shards``, ``runner``, ``workers``,
    ``address`` and ``torch_threads`` say how the work is spread (parts align to batches, so the floats are the same) and
    ``memory_budget_mb`` how selection reads them.
    """

    batch_size: int = Field(256, ge=1)
    shards: int = Field(1, ge=1, description="parts each split is extracted in (one task and one Parquet file each)")
    runner: Literal["thread", "process", "dask"] = Field(
        "thread",
        description="Prefect task runner of the shards: thread (in-process), process (local processes) "
        "or dask (prefect-dask: a local cluster of `workers` processes, or the scheduler at `address`)",
    )
    workers: int = Field(1, ge=1, description="shards run at once: threads, processes or local Dask workers")
    address: str | None = Field(None, description="dask: an existing scheduler (e.g. tcp://gpu-host:8786)")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per part; null: the cores divided by workers for local process "
        "and Dask workers, torch's own setting otherwise",
    )
    memory_budget_mb: float = Field(
        2048, gt=0, description="features larger than this are read by memory map (a .npy beside the Parquet)"
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> FeaturesCfg:
        if self.address and self.runner != "dask":
            raise ValueError(f"features.address needs features.runner=dask (runner is {self.runner!r})")
        return self

    @property
    def sharded(self) -> bool:
        """Whether extraction goes through parts (anything but today's one task in the flow's thread)."""
        return self.shards > 1 or self.runner != "thread"

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_mb * 2**20)


class ProxyCfg(_Model):
    hidden: int = Field(256, ge=1)
    epochs: int = Field(100, ge=1)
    lr: float = Field(0.3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    batch_size: int = Field(128, ge=2)
    momentum: float = Field(0.9, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class AuditCfg(_Model):
    """The accuracy audit (:mod:`alcore.estimate`): labels bought from the oracle on a reserve that
    selection never sees, to estimate accuracy without a test set. Off while ``fraction`` and
    ``initial`` are 0."""

    reserve: float = Field(
        0.1, gt=0, lt=1, description="fraction of the pool set aside from selection: the audit's population"
    )
    initial: int = Field(0, ge=0, description="audit draws bought in round 1")
    fraction: float = Field(
        0.0, ge=0, le=1, description="audit draws held per training label (the audit grows with the labels)"
    )
    sampling: Literal["uniform", "active"] = Field(
        "active", description="active: draw samples the model is unsure of more, with known probabilities"
    )
    estimator: Literal["ppi", "wilson", "exact"] = Field(
        "ppi", description="ppi: prediction-powered (any sampling); wilson / exact: binomial (uniform only)"
    )
    mix: float = Field(0.5, gt=0, le=1, description="active: the uniform share of the draw probabilities")
    confidence: float = Field(0.95, gt=0, lt=1)
    target: float | None = Field(
        None, gt=0, lt=1, description="forecast the labels and $ to reach this accuracy (null: no forecast)"
    )
    half_width: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="buy audit draws until the interval is this narrow (e.g. 0.05: +-5 points), sized each round "
        "from the last estimate's spread, at most the reserve's size; null: only initial and fraction",
    )

    @model_validator(mode="after")
    def _estimator_fits_sampling(self) -> AuditCfg:
        if self.sampling == "active" and self.estimator != "ppi":
            raise ValueError(
                "al.audit.sampling=active needs al.audit.estimator=ppi (the binomial ones assume uniform draws)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.initial > 0 or self.fraction > 0 or self.half_width is not None

    def reserve_size(self, n_pool: int) -> int:
        """Pool ids the reserve sets aside from a pool of ``n_pool``."""
        return min(max(2, round(self.reserve * n_pool)), n_pool - 1)

    def draws_at(self, n_labeled: int) -> int:
        """Audit draws held once ``n_labeled`` training labels are bought."""
        import math

        return max(self.initial, math.ceil(self.fraction * n_labeled)) if self.enabled else 0


class ALCfg(_Model):
    pipeline: str = Field(
        "svpp",
        description="standard: fine-tune + score with the network every round; svpp: proxy on fixed features; "
        "asvp: svpp + realign the features when the trigger fires (alcore list pipelines)",
    )
    strategy: str = "margin"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    initial: int = Field(20, ge=1, description="labels bought at random in round 1")
    batch: int = Field(20, ge=1, description="labels bought in each later round")
    rounds: int = Field(10, ge=1, description="rounds in all, round 1 included")
    trigger: str = Field("logme_drop", description="asvp: when to realign (alcore list triggers)")
    trigger_params: dict[str, Any] = Field(default_factory=dict)
    max_realignments: int = Field(3, ge=0, description="asvp: at most this many realignments per experiment")
    evaluate_every_round: bool = Field(
        False,
        description="train and test the final network at every budget (uncharged evaluation; compare turns it on)",
    )
    stop: str = Field("never", description="when to stop early (alcore.stopping: the STOP_RULES registry)")
    stop_params: dict[str, Any] = Field(default_factory=dict)
    audit: AuditCfg = AuditCfg()

    @model_validator(mode="after")
    def _stop_rule_and_audit(self) -> ALCfg:
        if self.audit.target is not None and not self.audit.enabled:
            raise ValueError("al.audit.target forecasts from the audit: set al.audit.fraction or al.audit.initial")
        if self.stop == "never" and not self.stop_params and not self.audit.enabled:
            return self  # the default: nothing to check (and alcore.stopping stays unimported)
        from alcore.stopping import make_stop_rule

        needs = make_stop_rule(self.stop, **self.stop_params).needs()
        if "estimates" in needs and not self.audit.enabled:
            raise ValueError(
                f"al.stop={self.stop!r} reads the accuracy estimate: set al.audit.fraction (e.g. 0.1) or al.audit.initial"
            )
        return self

    def schedule(self) -> list[int]:
        """Labels bought in rounds 1..rounds."""
        return [self.initial] + [self.batch] * (self.rounds - 1)


class OracleCfg(_Model):
    name: str = Field("simulated", description="simulated (reveals the truth) | human (files, see labeling)")
    price_per_label: float = Field(0.10, ge=0)
    noise_rate: float = Field(0.0, ge=0, lt=1)


_URL_FIELDS = ("path", "relpath", "file", "id", "data")


class LabelingCfg(_Model):
    """The human oracle's hand-off (``oracle.name: human``): labeling jobs go out to
    ``labels/<name>/labeling/outbox/``, annotations come back through ``labels/<name>/labeling/inbox/``.

    Operational, not part of the experiment's identity: changing it never refuses a resume.
    """

    min_fraction: float = Field(
        1.0, gt=0, le=1, description="select and export the next batch once this fraction of the open one is labeled"
    )
    image_url: str = Field(
        "{data}",
        description="how a Label Studio task names its image: {data} (the image itself, embedded as a data: URI; "
        "shows in a stock Label Studio with no set-up), or a template of {path} (absolute file), {relpath} "
        "(relative to image_root), {file} (base name) and {id}, percent-encoded when it is a URL "
        "(`alcore label setup` prints what Label Studio needs for each)",
    )
    image_root: str | None = Field(None, description="the folder {relpath} is relative to")
    embed_max_side: int = Field(
        512,
        ge=16,
        le=4096,
        description="{data}: images larger than this (pixels, longest side) are embedded scaled down",
    )
    conflicts: Literal["refuse", "majority", "first"] = Field(
        "refuse",
        description="annotators who disagree on a sample: refuse (report it, commit nothing for it), majority "
        "(the most given label; a tie is refused), first (the earliest answer); every conflict is reported",
    )
    settle_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="an inbox file modified less than this long ago may still be being written: the cycle waits "
        "until it is this old and unchanged (a file that changes is left for the next cycle)",
    )
    from_name: str = Field("label", pattern=r"^[A-Za-z0-9_.-]+$", description="Label Studio <Choices name=...>")
    to_name: str = Field("image", pattern=r"^[A-Za-z0-9_.-]+$", description="Label Studio <Image name=...>")

    @field_validator("image_url")
    @classmethod
    def _known_fields(cls, v: str) -> str:
        import re

        unknown = sorted(set(re.findall(r"\{([^{}]*)\}", v)) - set(_URL_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join('{' + u + '}' for u in unknown)} in image_url; "
                f"allowed: {', '.join('{' + f + '}' for f in _URL_FIELDS)}"
            )
        return v

    @model_validator(mode="after")
    def _root_for_relpath(self) -> LabelingCfg:
        if "{relpath}" in self.image_url and not self.image_root:
            raise ValueError("image_url uses {relpath}: set labeling.image_root, the folder it is relative to")
        if "{data}" in self.image_url and self.image_url != "{data}":
            raise ValueError("image_url {data} is the whole image (a data: URI): use it alone, image_url: '{data}'")
        return self


class TrainCfg(_Model):
    """The real network (:mod:`alcore.training`): LP solved to convergence, FT / LP-FT counted in
    optimiser steps and held to their probe on held-out labels, ``auto`` chosen on that evidence;
    FixMatch / AS3L (:mod:`alcore.semi`) held to the probe the same way."""

    mode: Literal["auto", "lp", "ft", "lpft", "fixmatch", "as3l"] = Field(
        "auto",
        description="auto: the probe, lpft or ft, whichever wins on held-out labels; fixmatch / as3l: semi-supervised",
    )
    lp_C: float = Field(1.0, gt=0, description="the probe's inverse L2 strength (scikit-learn's C)")
    lp_max_iter: int = Field(1000, ge=1, description="L-BFGS iterations of the probe (it stops when converged)")
    ft_epochs: float = Field(30, ge=0, description="passes over the labeled set; steps = clip(epochs n / batch)")
    ft_min_steps: int = Field(300, ge=1, description="the floor on optimiser steps, whatever the label count")
    ft_max_steps: int = Field(3000, ge=1, description="the cap on optimiser steps")
    batch_size: int = Field(64, ge=2)
    head_lr: float = Field(0.1, gt=0, description="ft: the fresh head")
    backbone_lr: float = Field(0.01, gt=0, description="ft: the encoder")
    lpft_head_lr: float = Field(0.01, gt=0, description="lpft: the probed head")
    lpft_backbone_lr: float = Field(0.01, gt=0, description="lpft: the encoder")
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step"] = Field("cosine", description="step: x0.1 at 50% and 75% of the steps")
    bn: Literal["auto", "train", "frozen"] = Field(
        "auto",
        description="BatchNorm while fine-tuning: auto = batch statistics from bn_min_batch images a batch, else frozen",
    )
    bn_min_batch: int = Field(16, ge=2)
    augment: Literal["none", "crop", "crop_flip"] = "crop"
    holdout: float = Field(
        0.2,
        ge=0,
        le=0.5,
        description="fraction of the labels a fold holds out to check ft / lpft / fixmatch / as3l against the probe (0: off)",
    )
    min_holdout: int = Field(40, ge=1, description="fewer held-out labels in one fold: more folds (k-fold)")
    auto_modes: list[Literal["lpft", "ft"]] = Field(
        default_factory=lambda: ["lpft", "ft"], description="what auto compares with the probe"
    )
    auto_margin: float = Field(
        0.75,
        ge=0,
        description="a mode replaces the probe only if held-out wins - losses against it > this x sqrt(wins + losses)",
    )
    semi_steps: int = Field(300, ge=1, description="fixmatch / as3l: optimiser steps")
    semi_batch_size: int = Field(16, ge=1, description="labeled images per step")
    semi_mu: int = Field(3, ge=1, description="unlabeled images per labeled one in a step")
    semi_lr: float = Field(0.03, gt=0)
    semi_threshold: float = Field(0.95, gt=0, le=1, description="FixMatch's confidence mask")
    semi_lambda_u: float = Field(1.0, ge=0)
    semi_switch: float = Field(0.3, ge=0, le=1, description="as3l: prior-guided targets for this fraction of steps")
    semi_head_init: Literal["random", "probe"] = Field(
        "random", description="fixmatch / as3l: the head starts at random or at the labeled set's linear probe"
    )
    as3l_runs: int = Field(5, ge=1, description="as3l: k-means runs behind f_fine")
    as3l_epochs: int = Field(30, ge=1, description="as3l: epochs of the linear layer giving f_fine")
    prior_temperature: float = Field(0.1, gt=0, description="as3l: softness of the prior confidence")

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        retired = {
            "lp_epochs": "the probe is solved to convergence (lp_C, lp_max_iter)",
            "auto_threshold": "auto chooses on held-out labels (holdout, min_holdout, auto_modes)",
        }
        gone = [k for k in retired if isinstance(data, dict) and k in data]
        if gone:
            raise ValueError(
                "; ".join(f"train.{k} was retired: {retired[k]}" for k in gone) + ". Remove it from params.yaml"
            )
        return data

    def train_config(self) -> Any:
        """The :class:`alcore.training.TrainConfig` of these parameters."""
        from alcore.training import TrainConfig

        keys = set(TrainConfig.__dataclass_fields__) & set(type(self).model_fields)
        d = {k: getattr(self, k) for k in keys}
        d["auto_modes"] = tuple(self.auto_modes)
        return TrainConfig(**d)

    def semi_config(self) -> Any:
        """The :class:`alcore.semi.SemiConfig` of these parameters."""
        from alcore.semi import SemiConfig

        return SemiConfig(
            steps=self.semi_steps,
            batch_size=self.semi_batch_size,
            mu=self.semi_mu,
            lr=self.semi_lr,
            weight_decay=self.weight_decay,
            threshold=self.semi_threshold,
            lambda_u=self.semi_lambda_u,
            switch=self.semi_switch,
            augment=self.augment,
            head_init=self.semi_head_init,
        )


class CostCfg(_Model):
    price_per_hour: float = Field(3.0, ge=0, description="compute $ per hour (the paper uses $3/GPU-hour)")


class CompareCfg(_Model):
    """The ``compare`` flow: pipelines x strategies x seeds on one dataset and encoder."""

    pipelines: list[str] = Field(
        default_factory=lambda: ["standard", "svpp", "asvp"], description="alcore list pipelines"
    )
    strategies: list[str] = Field(default_factory=lambda: ["margin"])
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0, 1, 2])
    target_fraction: float = Field(
        0.98, gt=0, le=1, description="labels to reach this fraction of Standard AL's final accuracy"
    )


class OrchestrationCfg(_Model):
    """Where the work runs: Prefect work pools (``prefect.yaml``, README "Running on GPU workers")."""

    gpu_pool: str = Field(
        "gpu",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="work pool of the GPU steps (pre-training, extraction, fine-tuning)",
    )
    cpu_pool: str = Field(
        "cpu", pattern=r"^[A-Za-z0-9._-]+$", description="work pool of the pipeline itself (selection, labels, reports)"
    )
    dispatch: Literal["local", "pools"] = Field(
        "local",
        description="local: GPU steps run in the flow's own process; pools: each runs as a flow run of the "
        "alcore-gpu deployment on gpu_pool",
    )


class Params(_Model):
    """The whole of ``params.yaml``."""

    experiment: ExperimentCfg = ExperimentCfg()
    data: DataCfg = DataCfg()
    encoder: EncoderCfg = EncoderCfg()
    features: FeaturesCfg = FeaturesCfg()
    pretext: PretextCfg = PretextCfg()
    proxy: ProxyCfg = ProxyCfg()
    al: ALCfg = ALCfg()
    oracle: OracleCfg = OracleCfg()
    labeling: LabelingCfg = LabelingCfg()
    train: TrainCfg = TrainCfg()
    cost: CostCfg = CostCfg()
    compare: CompareCfg = CompareCfg()
    orchestration: OrchestrationCfg = OrchestrationCfg()

    @field_validator("experiment", mode="before")
    @classmethod
    def _none_is_default(cls, v: Any) -> Any:
        return {} if v is None else v

    def digest(self, *sections: str) -> str:
        """Digest of the given sections (all when none): what a stage's outputs depend on."""
        d = self.model_dump(mode="json")
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        given = e.get("input")
        given_s = "" if isinstance(given, dict) else f" (given: {given!r})"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown parameter{given_s}; remove it or check its spelling")
        else:
            lines.append(f"  {loc}: {e['msg']}{given_s}")
    return (
        f"Invalid parameters in {source}:\n"
        + "\n".join(lines)
        + "\nFix: correct these values (see params.yaml and README for what each one means)."
    )


def parse_params(data: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a params mapping; :class:`ConfigError` lists every problem at once."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a params mapping."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(problem(f"override {item!r}", "section.key=value, e.g. al.rounds=5"))
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(problem(f"override {item!r}: {p} is not a section"))
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read and validate ``params.yaml`` (with optional ``key=value`` overrides)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            problem(f"No parameters file at {path}", fix="run from the project root or pass --params PATH")
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(problem(f"{path} is not valid YAML: {e}")) from None
    if not isinstance(data, dict):
        raise ConfigError(problem(f"{path} must hold a mapping of sections"))
    return parse_params(apply_overrides(data, overrides or []), source=str(path))

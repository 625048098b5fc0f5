"""Oracles: whoever answers "what is the label of these ids?", at a price per label."""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from alcore.errors import ConfigError, LabelError, LabelImportError, problem
from alcore.registry import Registry
from alcore.state import as_int_ids
from alcore.strategies.base import Configurable, build

if TYPE_CHECKING:
    from alcore.datasets.base import Split
    from alcore.labeling import Batch, ImportResult
    from alcore.state import LabelState

__all__ = ["ORACLES", "HumanOracle", "LabelBatch", "Oracle", "SimulatedOracle", "make_oracle"]


@dataclass(frozen=True, eq=False)
class LabelBatch:
    """What an oracle answered: ``ids[i]`` has label ``labels[i]``.

    A human oracle may answer fewer ids than it was asked; the loop labels what it got.

    Attributes:
        ids: ``(k,)`` int64 pool ids.
        labels: ``(k,)`` int64 class indices.
    """

    ids: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        ids = as_int_ids(self.ids, "LabelBatch.ids", LabelError)
        labels = as_int_ids(self.labels, "LabelBatch.labels", LabelError)
        if ids.size != labels.size:
            raise LabelError(
                problem(
                    f"LabelBatch with {ids.size} ids but {labels.size} labels",
                    allowed="one label per id",
                )
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return int(self.ids.size)


class Oracle(Configurable, ABC):
    """Answers label queries. Subclasses take keyword-only parameters (scikit-learn manners),
    including ``price_per_label`` (in dollars), and implement :meth:`query`."""

    name: ClassVar[str]
    price_per_label: float

    @abstractmethod
    def query(self, ids: np.ndarray) -> LabelBatch:
        """Labels for ``ids`` (``(k,)`` pool ids); may answer a subset of them."""


ORACLES: Registry[type[Oracle]] = Registry("oracle")


def make_oracle(name: str, **params: Any) -> Oracle:
    """Build the oracle registered as ``name`` with ``params`` (unknown ones -> ConfigError)."""
    return build(ORACLES, name, params)


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on a uint64 array (a bijective, well-mixing hash)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _id_hash(ids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """``(k,)`` uint64 hash of (seed, stream, id): a function of each id alone."""
    key = _splitmix64(np.array([seed, stream], dtype=np.uint64))
    salt = _splitmix64(key[:1] ^ _splitmix64(key[1:]))
    return _splitmix64(np.ascontiguousarray(ids, dtype=np.int64).view(np.uint64) ^ salt)


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> float64 uniforms in [0, 1) from the top 53 bits."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


@ORACLES.register("simulated")
class SimulatedOracle(Oracle):
    """Reveals the ground truth of a labeled dataset, optionally with symmetric label noise.

    With ``noise_rate > 0`` each id's answer is flipped, with probability ``noise_rate``, to a
    class drawn uniformly among the other ``n_classes - 1``. The flip and the wrong class are
    functions of ``(random_state, id)`` only: the same id always gets the same answer, whatever
    the query order or batching.

    Args:
        ids: ``(N,)`` integer ids the oracle knows, unique.
        labels: ``(N,)`` their true classes in ``[0, n_classes)``.
        n_classes: number of classes C >= 2.
        price_per_label: dollars per answered label, >= 0.
        noise_rate: probability of a wrong answer, in ``[0, 1)``.
        random_state: int >= 0 keying the noise.
    """

    name = "simulated"

    def __init__(
        self,
        *,
        ids: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        price_per_label: float = 0.0,
        noise_rate: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.ids = ids
        self.labels = labels
        self.n_classes = n_classes
        self.price_per_label = price_per_label
        self.noise_rate = noise_rate
        self.random_state = random_state

    def __repr__(self) -> str:  # ids and labels are long: show their size only
        return (
            f"SimulatedOracle(n_ids={np.asarray(self.ids).size}, n_classes={self.n_classes!r}, "
            f"price_per_label={self.price_per_label!r}, noise_rate={self.noise_rate!r}, "
            f"random_state={self.random_state!r})"
        )

    def _validate(self) -> None:
        def is_real(x: object) -> bool:
            return (
                isinstance(x, int | float | np.integer | np.floating)
                and not isinstance(x, bool)
                and math.isfinite(float(x))
            )

        def is_int(x: object) -> bool:
            return isinstance(x, int | np.integer) and not isinstance(x, bool)

        checks = [
            ("n_classes", is_int(self.n_classes) and self.n_classes >= 2, "an int >= 2"),
            (
                "price_per_label",
                is_real(self.price_per_label) and self.price_per_label >= 0,
                "a finite number >= 0 (dollars)",
            ),
            (
                "noise_rate",
                is_real(self.noise_rate) and 0 <= self.noise_rate < 1,
                "a number in [0, 1)",
            ),
            (
                "random_state",
                is_int(self.random_state) and 0 <= self.random_state < 2**63,
                "an int >= 0 (a Generator cannot give each id a fixed answer)",
            ),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    problem(
                        f"SimulatedOracle {name}={getattr(self, name)!r}",
                        allowed=allowed,
                        fix=f"pass a valid {name}",
                    )
                )

    def _build_table(self) -> None:
        """Sorted copies of the known ids and their labels (learned state, built once)."""
        ids = as_int_ids(self.ids, "SimulatedOracle ids", ConfigError)
        labels = as_int_ids(self.labels, "SimulatedOracle labels", ConfigError)
        if ids.size != labels.size:
            raise ConfigError(
                problem(
                    f"SimulatedOracle got {ids.size} ids but {labels.size} labels",
                    allowed="one label per id",
                )
            )
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if sorted_ids.size > 1 and (sorted_ids[1:] == sorted_ids[:-1]).any():
            raise ConfigError(problem("SimulatedOracle ids hold duplicates", allowed="unique ids"))
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ConfigError(
                problem(
                    "SimulatedOracle labels outside the class set",
                    allowed=f"class indices in [0, {self.n_classes})",
                )
            )
        self.sorted_ids_ = sorted_ids
        self.sorted_labels_ = labels[order]

    def true_labels(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` int64 true labels of ``ids`` (no noise).

        Raises:
            LabelError: some ids are unknown to the oracle.
        """
        self._validate()
        if not hasattr(self, "sorted_ids_"):
            self._build_table()
        ids = as_int_ids(ids, "ids", LabelError)
        known = self.sorted_ids_
        at = np.minimum(np.searchsorted(known, ids), max(known.size - 1, 0))
        found = known[at] == ids if known.size else np.zeros(ids.size, dtype=bool)
        if not found.all():
            missing = ids[~found]
            raise LabelError(
                problem(
                    f"the oracle has no label for ids {missing[:5].tolist()}"
                    + (f" ... ({missing.size} in all)" if missing.size > 5 else ""),
                    allowed="ids of the pool the oracle was built from",
                    fix="query only pool ids",
                )
            )
        return self.sorted_labels_[at]

    def query(self, ids: np.ndarray) -> LabelBatch:
        """Answer every id in ``ids``: the true label, or a noisy one (see the class docs)."""
        ids = as_int_ids(ids, "ids", LabelError)
        answers = self.true_labels(ids)
        if self.noise_rate > 0 and ids.size:
            flip = _uniform(_id_hash(ids, int(self.random_state), 0)) < self.noise_rate
            shift = 1 + (_id_hash(ids, int(self.random_state), 1) % np.uint64(self.n_classes - 1))
            answers = np.where(flip, (answers + shift.astype(np.int64)) % self.n_classes, answers)
        return LabelBatch(ids=ids.copy(), labels=answers.astype(np.int64, copy=False))


@ORACLES.register("human")
class HumanOracle(Oracle):
    """People answer, through files: a labeling job goes out, annotations come back.

    :meth:`export` writes a batch to ``outbox`` as ``<job>.csv`` (a spreadsheet to fill in) and
    ``<job>.labelstudio.json`` (Label Studio tasks with the proxy's guess as a pre-annotation),
    plus ``label-config.xml`` for the Label Studio project. Pools held in memory get their images
    written as PNG to ``outbox/images/``. :meth:`import_` reads a filled CSV or a Label Studio
    export and validates every row (:func:`alcore.labeling.check_annotations`). :meth:`query`
    does both for an ad-hoc set of ids, the plain :class:`Oracle` way: it answers the ids that
    have been labeled so far (maybe none). Every file is written atomically.

    Args:
        pool: the dataset's pool split (ids, and image paths or in-memory images).
        classes: the class names; annotators answer with these.
        outbox: folder the labeling jobs are written to.
        inbox: folder annotation files are read from (:meth:`query` only).
        price_per_label: dollars per label committed, >= 0.
        image_url: ``"{data}"`` (embed each image in the Label Studio task as a data: URI, see
            :func:`alcore.labeling.image_data_uri`) or a template naming each image (see
            :func:`alcore.labeling.image_reference`).
        image_root: the folder ``{relpath}`` is relative to.
        embed_max_side: ``{data}``: larger images are embedded scaled to this longest side.
        from_name, to_name: the Label Studio ``<Choices name>`` and ``<Image name>``.
    """

    name = "human"

    def __init__(
        self,
        *,
        pool: Split,
        classes: Sequence[str],
        outbox: str | os.PathLike[str],
        inbox: str | os.PathLike[str] | None = None,
        price_per_label: float = 0.0,
        image_url: str = "{data}",
        image_root: str | None = None,
        embed_max_side: int = 512,
        from_name: str = "label",
        to_name: str = "image",
    ) -> None:
        self.pool = pool
        self.classes = classes
        self.outbox = outbox
        self.inbox = inbox
        self.price_per_label = price_per_label
        self.image_url = image_url
        self.image_root = image_root
        self.embed_max_side = embed_max_side
        self.from_name = from_name
        self.to_name = to_name

    def __repr__(self) -> str:
        return (
            f"HumanOracle(n_pool={len(self.pool)}, classes={len(self.classes)}, outbox={str(self.outbox)!r}, "
            f"price_per_label={self.price_per_label!r})"
        )

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        pool_ids = np.asarray(self.pool.ids, dtype=np.int64)
        order = np.argsort(pool_ids, kind="stable")
        pos = order[np.searchsorted(pool_ids, ids, sorter=order).clip(0, max(pool_ids.size - 1, 0))]
        if ids.size and not np.array_equal(pool_ids[pos], ids):
            raise LabelError(problem(f"ids not in the pool: {ids[pool_ids[pos] != ids][:5].tolist()}"))
        return pos

    def _images(self, ids: np.ndarray) -> tuple[list[str], list[str]]:
        """The image files of ``ids`` (in-memory images are written as PNG first) and their
        references in a Label Studio task: data: URIs with ``image_url: "{data}"``, else the
        filled template."""
        from alcore.labeling import image_data_uri, image_reference

        paths = self._files(ids, self._positions(ids))
        if self.image_url == "{data}":
            folder = Path(self.outbox).resolve() / "images"
            refs = [
                image_data_uri(p, max_side=self.embed_max_side, scaled=folder / f"{s}.{self.embed_max_side}px.jpg")
                for p, s in zip(paths, ids.tolist(), strict=True)
            ]
        else:
            refs = [
                image_reference(self.image_url, path=p, id=s, image_root=self.image_root)
                for p, s in zip(paths, ids.tolist(), strict=True)
            ]
        return paths, refs

    def _files(self, ids: np.ndarray, pos: np.ndarray) -> list[str]:
        """The image file of each id: the dataset's own, or a PNG written to ``outbox/images/``
        for pools held in memory."""
        from alcore._io import atomic_path

        paths = []
        for sid, i in zip(ids.tolist(), pos.tolist(), strict=True):
            if self.pool.paths is not None:
                paths.append(str(self.pool.paths[i]))
                continue
            from PIL import Image

            png = Path(self.outbox).resolve() / "images" / f"{sid}.png"
            if not png.is_file():
                with atomic_path(png) as tmp:
                    Image.fromarray(np.asarray(self.pool.images[i])).save(tmp, format="PNG")  # type: ignore[index]
            paths.append(str(png))
        return paths

    def export(self, batch: Batch, name: str | None = None) -> list[Path]:
        """Write the labeling job of ``batch`` (files named ``name``, default ``batch-<round>``).

        Idempotent: a file is rewritten (atomically) only when its content differs.
        """
        from alcore._io import write_text_atomic
        from alcore.labeling import label_config_xml, render_job

        classes = list(self.classes)
        paths, refs = self._images(batch.ids)
        files = render_job(
            batch,
            refs,
            classes,
            from_name=self.from_name,
            to_name=self.to_name,
            files=paths if self.image_url == "{data}" else None,  # the CSV names files, not data URIs
        )
        files = {f"{name or batch.name}{suffix}": text for suffix, text in files.items()}
        files["label-config.xml"] = label_config_xml(classes, from_name=self.from_name, to_name=self.to_name)
        out = []
        for fname, text in files.items():
            path = Path(self.outbox) / fname
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                write_text_atomic(path, text)
            out.append(path)
        return out

    def import_(self, path: str | os.PathLike[str], *, labels: LabelState, requested: np.ndarray) -> ImportResult:
        """Read and validate an annotation file; nothing is committed (see :class:`~alcore.labeling.ImportResult`).

        Raises:
            LabelImportError: the file as a whole cannot be read.
        """
        from alcore.labeling import import_annotations

        return import_annotations(
            path, labels=labels, requested=requested, classes=list(self.classes), from_name=self.from_name
        )

    def query(self, ids: np.ndarray) -> LabelBatch:
        """Export ``ids`` as a job (``query-<digest>``, once) and answer those labeled so far in the
        inbox files (possibly none: ask again later).

        Raises:
            LabelImportError: rows about these ids are invalid (all of them listed, with row numbers).
        """
        from alcore.labeling import Batch, check_annotations, inbox_files, parse_id, read_annotations
        from alcore.state import LabelState

        ids = as_int_ids(ids, "ids", LabelError)
        digest = hashlib.sha256(np.sort(ids).tobytes()).hexdigest()[:12]
        self.export(Batch.unpredicted(1, ids), name=f"query-{digest}")
        asked = set(ids.tolist())
        rows = []
        for f in inbox_files(self.inbox) if self.inbox is not None else []:
            for r in read_annotations(f, from_name=self.from_name):
                if r.problem is None and parse_id(r.sample_id) in asked:
                    rows.append(type(r)(len(rows) + 1, f"{f.name} {r.where}", r.sample_id, r.label))
        state = LabelState(np.asarray(self.pool.ids, dtype=np.int64), len(self.classes))
        res = check_annotations(rows, labels=state, requested=ids, classes=list(self.classes), file="the inbox")
        if res.problems:
            raise LabelImportError(res.message())
        return LabelBatch(ids=res.ids, labels=res.labels)

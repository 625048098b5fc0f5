"""Datasets of image files on disk, read on demand: class subfolders or a CSV/Parquet manifest.

Splits built here are path-based (``Split.paths`` set, ``Split.images`` None); pixels are read by
:func:`read_images` when a batch is asked for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alcore.datasets.base import Dataset, Split
from alcore.datasets.builtin import check_classes
from alcore.datasets.loading import check_fraction, check_int, register_dataset, stratified_split
from alcore.errors import DataError, problem

__all__ = ["IMAGE_EXTENSIONS", "image_folder", "path_id", "read_images"]

#: File name endings (lower case) taken as images when walking class subfolders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_ID_MASK = 0x7FFF_FFFF_FFFF_FFFF


def read_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Read image files as one uint8 batch ``(B, size, size, 3)``.

    Each file is opened with PIL, converted to RGB and resized to ``size`` x ``size`` (bilinear).

    Raises:
        DataError: a file cannot be opened or decoded (the message names it).
    """
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb, dtype=np.uint8)
        except image_errors() as e:
            raise image_error(p, e) from e
    return out


def image_errors() -> tuple[type[BaseException], ...]:
    """What reading an image file may raise; :func:`image_error` turns each into a clear message."""
    from PIL import Image

    # DecompressionBombError is no OSError: a 400-megapixel file would escape a plain except
    return (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError)


def image_error(path: str | Path, err: BaseException) -> DataError:
    """The one message for an image file that cannot be read (truncated, not an image, too big)."""
    from PIL import Image

    if isinstance(err, Image.DecompressionBombError | MemoryError):
        return DataError(
            problem(
                f"Cannot read image {str(path)!r}: it is too large to decode safely ({err})",
                allowed=f"images up to {Image.MAX_IMAGE_PIXELS * 2} pixels (PIL's guard against decompression bombs)",
                fix="scale the file down (e.g. to a few thousand pixels a side), or remove it",
            )
        )
    return DataError(
        problem(
            f"Cannot read image {str(path)!r}: {err}",
            allowed="files PIL can open (png, jpg, bmp, webp, ...)",
            fix="replace or remove the file",
        )
    )


def path_id(relative_posix_path: str) -> int:
    """The stable id of a file: the first 8 bytes of the sha256 of its POSIX path relative to the
    root, read big-endian, with the sign bit cleared (a non-negative int64).

    It depends on nothing but the path, so ids survive adding or removing other images.
    """
    digest = hashlib.sha256(relative_posix_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


class _Root:
    """A root folder that every image must stay inside, symlinks resolved."""

    def __init__(self, root: Path) -> None:
        self.given = root
        self.lexical = Path(os.path.abspath(root))
        self.real = root.resolve()

    def locate(self, path: str | Path, *, source: str) -> tuple[str, str]:
        """``path`` (relative to the root, or absolute) -> ``(relative POSIX path, real path)``.

        Raises:
            DataError: the path leaves the root (``..``, absolute elsewhere, or a symlink out).
        """
        p = Path(path)
        full = p if p.is_absolute() else self.lexical / p
        real = full.resolve()
        if not real.is_relative_to(self.real):
            raise DataError(
                problem(
                    f"{source} path {str(path)!r} resolves to {str(real)!r}, outside the root {str(self.given)!r}",
                    allowed="paths inside the root folder (no '..', no absolute paths elsewhere, "
                    "no symlinks that lead out)",
                    fix="move the file under the root or correct the path",
                )
            )
        lexical = Path(os.path.normpath(full))
        if lexical.is_relative_to(self.lexical):
            rel = lexical.relative_to(self.lexical).as_posix()
        else:  # an absolute path through another name of the root
            rel = real.relative_to(self.real).as_posix()
        return rel, str(real)


def _walk_class_folders(root: _Root) -> tuple[list[str], list[str], list[str]]:
    """``(relative paths, real paths, class names)`` of the images under ``root/<class>/``."""
    class_dirs = sorted(d for d in root.lexical.iterdir() if d.is_dir() and not d.name.startswith("."))
    rels: list[str] = []
    reals: list[str] = []
    names: list[str] = []
    for d in class_dirs:
        found = []
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for f in sorted(filenames):
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    found.append(os.path.join(dirpath, f))
        if not found:
            raise DataError(
                problem(
                    f"Dataset 'image_folder': class folder {str(d)!r} holds no images",
                    allowed="files ending in " + ", ".join(IMAGE_EXTENSIONS),
                    fix="add images or remove the folder",
                )
            )
        for f in found:
            rel, real = root.locate(f, source="Image")
            rels.append(rel)
            reals.append(real)
            names.append(d.name)
    if not rels:
        raise DataError(
            problem(
                f"Dataset 'image_folder': root {str(root.given)!r} has no class subfolders",
                allowed="root/<class name>/<image files>, or a manifest",
                fix="lay the images out in one subfolder per class, or pass data.manifest=...",
            )
        )
    return rels, reals, names


def _read_manifest(path: Path) -> dict[str, list[Any]]:
    """Columns of a CSV or Parquet manifest as Python lists (``path`` and ``label`` required)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    allowed = "a .csv or .parquet file with columns path, label and optionally split, id"
    if not path.is_file():
        raise DataError(
            problem(
                f"Dataset 'image_folder': manifest {str(path)!r} does not exist",
                allowed=allowed,
                fix="pass data.manifest=... pointing at an existing file",
            )
        )
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix == ".csv":
            strings = {c: pa.string() for c in ("path", "split")}
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=strings))
        else:
            raise DataError(problem(f"Manifest {str(path)!r} has an unknown format", allowed=allowed))
    except (pa.ArrowException, OSError) as e:
        raise DataError(problem(f"Cannot read manifest {str(path)!r}: {e}", allowed=allowed, fix="fix the file")) from e
    missing = [c for c in ("path", "label") if c not in table.column_names]
    if missing:
        raise DataError(
            problem(
                f"Manifest {str(path)!r} lacks column(s) {', '.join(missing)} (it has {', '.join(table.column_names)})",
                allowed=allowed,
                fix="add the missing columns",
            )
        )
    columns: dict[str, list[Any]] = {}
    for name in ("path", "label", "split", "id"):
        if name not in table.column_names:
            continue
        col = table.column(name)
        if name == "label" and pa.types.is_null(col.type):  # no label at all: an unlabeled manifest
            columns[name] = [None] * len(col)
            continue
        if col.null_count and name != "label":  # labels may be missing: unlabeled pool images
            raise DataError(
                problem(
                    f"Manifest {str(path)!r}: column {name!r} has {col.null_count} empty value(s)",
                    fix="fill in every row",
                )
            )
        kind_ok = {
            "path": pa.types.is_string(col.type) or pa.types.is_large_string(col.type),
            "label": pa.types.is_integer(col.type)
            or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type),
            "split": pa.types.is_string(col.type) or pa.types.is_large_string(col.type),
            "id": pa.types.is_integer(col.type),
        }[name]
        if not kind_ok:
            raise DataError(
                problem(
                    f"Manifest {str(path)!r}: column {name!r} has type {col.type}",
                    allowed={
                        "path": "strings",
                        "label": "integers (class indices) or strings (class names)",
                        "split": "the strings pool and test",
                        "id": "integers",
                    }[name],
                    fix=f"fix the {name} column",
                )
            )
        columns[name] = col.to_pylist()
    return columns


def _label_indices(values: list[Any], classes: list[str] | None, source: str) -> tuple[np.ndarray, list[str]]:
    """Class names or integer labels -> ``((N,) int64 indices, class names)``."""
    if values and all(isinstance(v, int) for v in values):
        labels = np.asarray(values, dtype=np.int64)
        n_classes = len(classes) if classes is not None else int(labels.max()) + 1
        bad = (labels < 0) | (labels >= n_classes)
        if bad.any():
            raise DataError(
                problem(
                    f"{source}: {int(bad.sum())} integer label(s) outside [0, {n_classes}), e.g. {int(labels[bad][0])}",
                    allowed=f"labels in [0, {n_classes})",
                    fix="use class indices 0..C-1 or class names",
                )
            )
        return labels, classes if classes is not None else [str(c) for c in range(n_classes)]
    names = [str(v) for v in values]
    if classes is None:
        classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(
            problem(
                f"{source}: label(s) {', '.join(map(repr, unknown[:5]))} are not in classes",
                allowed=", ".join(classes),
                fix="add them to the classes parameter or correct the labels",
            )
        )
    return np.asarray([index[n] for n in names], dtype=np.int64), classes


def _manifest_labels(
    values: list[Any], split: list[str] | None, classes: list[str] | None, source: str
) -> tuple[np.ndarray, list[str]]:
    """A manifest's labels; pool rows may leave theirs empty (-1: unknown until people label them)."""
    missing = np.asarray([v is None or (isinstance(v, str) and not v.strip()) for v in values], dtype=bool)
    if not missing.any():
        return _label_indices(values, classes, source)
    if split is None:
        raise DataError(
            problem(
                f"{source}: {int(missing.sum())} row(s) have no label and there is no split column",
                allowed="unlabeled rows in the pool only, with a split column saying pool or test",
                fix="add a split column (pool for the unlabeled images, test for a labeled test set)",
            )
        )
    unlabeled_test = [int(i) + 1 for i in np.flatnonzero(missing) if split[i] == "test"]
    if unlabeled_test:
        raise DataError(
            problem(
                f"{source}: test row(s) without a label, e.g. data row(s) {unlabeled_test[:5]} (1-based, header not counted)",
                allowed="labels on every test row (the test set measures the models)",
                fix="label these test images, or move them to the pool",
            )
        )
    known = [v for v, m in zip(values, missing, strict=True) if not m]
    if classes is None and not all(isinstance(v, str) for v in known):
        raise DataError(
            problem(
                f"{source}: integer labels with unlabeled rows leave the class count unknown",
                fix="pass data.params.classes (the class names, in label order)",
            )
        )
    idx, classes = _label_indices(known, classes, source)
    labels = np.full(len(values), -1, dtype=np.int64)
    labels[~missing] = idx
    return labels, classes


@register_dataset("image_folder")
def image_folder(
    *,
    root: str,
    manifest: str | None = None,
    classes: list[str] | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Image files under ``root``, read on demand (path-based splits).

    Without ``manifest``: one subfolder per class (``root/<class>/**/*.png|jpg|jpeg|bmp|webp``,
    classes = sorted subfolder names unless ``classes`` fixes the order).

    With ``manifest`` (a .csv or .parquet file): columns ``path`` (relative to ``root``),
    ``label`` (class names, classes = sorted unique names unless ``classes`` is given; or integer
    indices, classes "0".."C-1"), optional ``split`` (``pool`` / ``test``) and optional integer
    ``id``. With a ``split`` column, pool rows may leave ``label`` empty: images nobody has labeled
    yet (label -1), for people to label (``oracle.name: human``). Any path that leaves ``root`` (``..``, an absolute path elsewhere, a symlink out) is
    refused.

    ids: the ``id`` column, else :func:`path_id` of the relative path. Without a ``split`` column
    the pool/test split is stratified, seeded by ``split_seed``, with ``test_fraction`` of each
    class in the test set.

    Raises:
        DataError: missing root or manifest, unreadable manifest, paths outside the root,
            missing files, duplicate paths or ids, unknown labels, an empty side.
    """
    classes = check_classes("image_folder", classes)
    split_seed = check_int("image_folder", "split_seed", split_seed, minimum=0)
    test_fraction = check_fraction("image_folder", "test_fraction", test_fraction)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(
            problem(
                f"Dataset 'image_folder': root {str(root_path)!r} does not exist or is not a folder",
                allowed="a folder with one subfolder of images per class, or the folder the "
                "manifest's paths are relative to",
                fix="pass data.root=... pointing at that folder",
            )
        )
    base = _Root(root_path)
    split_values: list[str] | None = None
    given_ids: list[int] | None = None
    if manifest is None:
        rels, reals, label_values = _walk_class_folders(base)
        if classes is None:
            classes = sorted(set(label_values))
        labels, classes = _label_indices(label_values, classes, f"Folder {str(root_path)!r}")
    else:
        manifest_path = Path(manifest).expanduser()
        columns = _read_manifest(manifest_path)
        source = f"Manifest {str(manifest_path)!r}"
        rels, reals = [], []
        for p in columns["path"]:
            rel, real = base.locate(p, source=source)
            rels.append(rel)
            reals.append(real)
        missing = [r for r, real in zip(rels, reals, strict=True) if not os.path.isfile(real)]
        if missing:
            raise DataError(
                problem(
                    f"{source}: {len(missing)} file(s) do not exist under root "
                    f"{str(root_path)!r}, e.g. {', '.join(map(repr, missing[:5]))}",
                    fix="correct the paths or the root",
                )
            )
        split_values = columns.get("split")
        labels, classes = _manifest_labels(columns["label"], split_values, classes, source)
        given_ids = columns.get("id")

    dup = _first_duplicate(rels)
    if dup is not None:
        raise DataError(problem(f"Dataset 'image_folder': path {dup!r} is listed twice", fix="list it once"))
    ids = np.asarray(given_ids if given_ids is not None else [path_id(r) for r in rels], np.int64)
    dup_id = _first_duplicate(ids.tolist())
    if dup_id is not None:
        raise DataError(
            problem(
                f"Dataset 'image_folder': id {dup_id} is given to more than one image",
                allowed="one id per image",
                fix="make the id column unique" if given_ids is not None else "rename one file",
            )
        )

    if split_values is not None:
        wrong = sorted(set(split_values) - {"pool", "test"})
        if wrong:
            raise DataError(
                problem(
                    f"Manifest split column holds {', '.join(map(repr, wrong[:5]))}",
                    allowed="pool, test",
                    fix="use pool or test in every row, or drop the column",
                )
            )
        is_test = np.asarray([v == "test" for v in split_values], dtype=bool)
        pool_pos, test_pos = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        pool_pos, test_pos = stratified_split(
            labels, test_fraction, np.random.default_rng(split_seed), dataset="image_folder"
        )

    def split(positions: np.ndarray) -> Split:
        return Split(
            ids=ids[positions],
            labels=labels[positions],
            paths=tuple(reals[i] for i in positions),
        )

    return Dataset(name="image_folder", classes=tuple(classes), pool=split(pool_pos), test=split(test_pos))


def _first_duplicate(values: list[Any]) -> Any | None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None

"""Built-in in-memory datasets: digits, MNIST, Fashion-MNIST, CIFAR-10 and any ``.npz``.

Every loader returns images as uint8 ``(N, H, W)`` or ``(N, H, W, C)`` at their stored size;
resizing to the encoder's input and forcing 3 channels happens later, in
:class:`alcore.preprocess.Preprocess`. torchvision is imported inside the loaders that need it.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from alcore.datasets.base import Dataset
from alcore.datasets.loading import (
    check_bool,
    check_fraction,
    check_int,
    in_memory_dataset,
    register_dataset,
    stratified_split,
)
from alcore.errors import ConfigError, DataError, problem

__all__ = ["cifar10", "digits", "fashion_mnist", "mnist", "npz", "read_idx"]


# --------------------------------------------------------------------------- digits


@register_dataset("digits")
def digits(*, split_seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's embedded 8x8 digits (1,797 images, 10 classes), no network needed.

    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``); images are
    ``(N, 8, 8)`` uint8. ids are positions in scikit-learn's order; pool and test are a
    stratified split seeded by ``split_seed`` with ``test_fraction`` of each class in the test set.
    """
    split_seed = check_int("digits", "split_seed", split_seed, minimum=0)
    test_fraction = check_fraction("digits", "test_fraction", test_fraction)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    pool, test = stratified_split(labels, test_fraction, np.random.default_rng(split_seed), dataset="digits")
    return in_memory_dataset(
        "digits",
        [str(c) for c in range(10)],
        (ids[pool], labels[pool], images[pool]),
        (ids[test], labels[test], images[test]),
    )


# --------------------------------------------------------------------------- MNIST family

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file of unsigned bytes (optionally gzip-compressed) into a uint8 array.

    The idx header is two zero bytes, the type code ``0x08`` (ubyte), the number of dimensions
    and one big-endian uint32 per dimension. Returns e.g. ``(60000, 28, 28)`` for an images file
    and ``(60000,)`` for a labels file.

    Raises:
        DataError: the file cannot be read or is not a well-formed ubyte idx file.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(problem(f"Cannot read idx file {str(path)!r}: {e}", fix="re-fetch the file")) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            problem(
                f"{str(path)!r} is not an idx file of unsigned bytes",
                allowed="the original MNIST-format idx files (magic 0x0000 08 nd)",
                fix="re-fetch the file",
            )
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    expected = int(np.prod(dims)) if dims else 0
    if len(dims) != ndim or len(raw) - header != expected:
        raise DataError(
            problem(
                f"idx file {str(path)!r} is truncated or corrupt: header says {dims}, {len(raw) - header} data bytes",
                fix="re-fetch the file",
            )
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx_files(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four idx files in ``folder`` (``name`` or ``name.gz``), or None if any is missing."""
    found: dict[str, tuple[Path, Path]] = {}
    for side, names in _IDX_NAMES.items():
        paths = []
        for stem in names:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    paths.append(candidate)
                    break
            else:
                return None
        found[side] = (paths[0], paths[1])
    return found


def _read_idx_pair(name: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            problem(
                f"Dataset {name!r}: {str(images_path)!r} holds {images.shape} and "
                f"{str(labels_path)!r} holds {labels.shape}",
                allowed="images (N, H, W) and labels (N,) of the same N",
                fix="check that the files belong together",
            )
        )
    return images, labels.astype(np.int64)


def _mnist_like(name: str, class_name: str, shared: str, root: Any, download: Any) -> Dataset:
    """Load an MNIST-format dataset; see :func:`mnist` for the layouts accepted."""
    import torchvision.datasets as tvd

    download = check_bool(name, "download", download)
    cls = getattr(tvd, class_name)
    root_path = Path(root).expanduser()
    layout = (
        f"ROOT/{class_name}/raw/ holding the four idx files (torchvision's layout), or ROOT "
        "itself holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)"
    )
    fix = (
        f"pass data.root=... pointing at such a folder (e.g. shared/data/{shared}), "
        "or set download=true on a machine with internet"
    )
    sides: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if download:
        try:
            for side in ("train", "test"):
                ds = cls(str(root_path), train=side == "train", download=True)
                sides[side] = (ds.data.numpy(), ds.targets.numpy().astype(np.int64))
        except (RuntimeError, OSError) as e:
            raise DataError(
                problem(
                    f"Dataset {name!r}: download into {str(root_path)!r} failed: {e}",
                    allowed=layout,
                    fix="run where the internet can be reached, or place the files and set download=false",
                )
            ) from e
    else:
        if not root_path.is_dir():
            raise DataError(
                problem(
                    f"Dataset {name!r}: root {str(root_path)!r} does not exist or is not a folder",
                    allowed=layout,
                    fix=fix,
                )
            )
        try:
            for side in ("train", "test"):
                ds = cls(str(root_path), train=side == "train", download=False)
                sides[side] = (ds.data.numpy(), ds.targets.numpy().astype(np.int64))
        except RuntimeError:
            # torchvision wants the *uncompressed* files in ROOT/<Class>/raw (it only unpacks the
            # .gz when download=True, which would also write into ROOT). Read the idx files
            # ourselves instead, from that folder or from ROOT itself; nothing is written.
            sides = {}
            for folder in (root_path / class_name / "raw", root_path):
                files = _find_idx_files(folder)
                if files is not None:
                    sides = {s: _read_idx_pair(name, *files[s]) for s in ("train", "test")}
                    break
            else:
                raise DataError(
                    problem(
                        f"Dataset {name!r}: no idx files found under root {str(root_path)!r}",
                        allowed=layout,
                        fix=fix,
                    )
                ) from None
    (x_train, y_train), (x_test, y_test) = sides["train"], sides["test"]
    n_train, n_test = len(y_train), len(y_test)
    return in_memory_dataset(
        name,
        [str(c) for c in cls.classes],
        (np.arange(n_train, dtype=np.int64), y_train, x_train),
        (np.arange(n_train, n_train + n_test, dtype=np.int64), y_test, x_test),
    )


@register_dataset("mnist")
def mnist(*, root: str, download: bool = False) -> Dataset:
    """MNIST: pool = the 60,000 training images (ids 0..59999 in file order), test = the 10,000
    test images (ids 60000..69999); images ``(N, 28, 28)`` uint8, classes from torchvision.

    ``root`` is either torchvision's layout (``ROOT/MNIST/raw/``, read by
    ``torchvision.datasets.MNIST``; ``download=True`` fetches it there) or a folder that holds the
    four idx files directly, gzip-compressed or not (like ``shared/data/mnist/``), which are
    parsed here with numpy; the same applies to ``.gz`` files in ``ROOT/MNIST/raw/``, which
    torchvision would only read after unpacking them with ``download=True``.
    """
    return _mnist_like("mnist", "MNIST", "mnist", root, download)


@register_dataset("fashion_mnist")
def fashion_mnist(*, root: str, download: bool = False) -> Dataset:
    """Fashion-MNIST, laid out and split exactly like :func:`mnist` (torchvision's layout is
    ``ROOT/FashionMNIST/raw/``; ``shared/data/fashion-mnist/`` holds the idx files directly)."""
    return _mnist_like("fashion_mnist", "FashionMNIST", "fashion-mnist", root, download)


# --------------------------------------------------------------------------- CIFAR-10


@register_dataset("cifar10")
def cifar10(*, root: str, download: bool = False) -> Dataset:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``: pool = the 50,000 training images
    (ids 0..49999), test = the 10,000 test images (ids 50000..59999); images ``(N, 32, 32, 3)``
    uint8.

    ``root`` holds ``cifar-10-batches-py/`` (torchvision's layout); a path to that folder itself
    is accepted too.
    """
    from torchvision.datasets import CIFAR10

    download = check_bool("cifar10", "download", download)
    root_path = Path(root).expanduser()
    if root_path.name == CIFAR10.base_folder and (root_path / "data_batch_1").is_file():
        root_path = root_path.parent
    layout = f"ROOT/{CIFAR10.base_folder}/ with data_batch_1..5, test_batch and batches.meta"
    fix = (
        "pass data.root=... pointing at the folder that holds cifar-10-batches-py, "
        "or set download=true on a machine with internet (or use the npz dataset for "
        "shared/data/cifar10-subset)"
    )
    if not download and not root_path.is_dir():
        raise DataError(
            problem(
                f"Dataset 'cifar10': root {str(root_path)!r} does not exist or is not a folder",
                allowed=layout,
                fix=fix,
            )
        )
    sides = {}
    try:
        for side in ("train", "test"):
            ds = CIFAR10(str(root_path), train=side == "train", download=download)
            sides[side] = (np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, np.int64))
            classes = list(ds.classes)
    except (RuntimeError, OSError) as e:
        raise DataError(
            problem(
                f"Dataset 'cifar10': cannot read CIFAR-10 under root {str(root_path)!r}: {e}",
                allowed=layout,
                fix=fix,
            )
        ) from e
    (x_train, y_train), (x_test, y_test) = sides["train"], sides["test"]
    n_train, n_test = len(y_train), len(y_test)
    return in_memory_dataset(
        "cifar10",
        classes,
        (np.arange(n_train, dtype=np.int64), y_train, x_train),
        (np.arange(n_train, n_train + n_test, dtype=np.int64), y_test, x_test),
    )


# --------------------------------------------------------------------------- npz

_NPZ_KEYS = ("train_x", "train_y", "test_x", "test_y")


def check_classes(dataset: str, classes: Any) -> list[str] | None:
    """``classes`` as a list of unique, non-empty strings (or None); else :class:`ConfigError`."""
    if classes is None:
        return None
    ok = isinstance(classes, list | tuple) and len(classes) > 0
    ok = ok and all(isinstance(c, str) and c for c in classes)
    if not ok or len(set(classes)) != len(classes):
        raise ConfigError(
            problem(
                f"Dataset {dataset!r}: parameter 'classes' is {classes!r}",
                allowed="a non-empty list of distinct class names",
                fix="list each class name once, in label order",
            )
        )
    return list(classes)


@register_dataset("npz")
def npz(*, path: str, classes: list[str] | None = None, labels: str = "index") -> Dataset:
    """Any ``.npz`` holding ``train_x``, ``train_y``, ``test_x``, ``test_y``.

    ``*_x`` are uint8 ``(N, H, W)`` or ``(N, H, W, C)`` with C in 1, 3, 4 (the same image shape
    in both splits); ``*_y`` are ``(N,)`` integer labels.

    ``labels="index"`` (default): labels are class indices in ``[0, C)``, C = ``len(classes)`` if
    given, else max label + 1 over both splits (classes then "0".."C-1"); a class no image has is
    warned about. ``labels="values"``: the distinct label values present (both splits) are the
    classes, in increasing order, named by their value (or by ``classes``, one name per value), and
    each label is mapped onto its index: EMNIST letters' 1..26 become 26 classes "1".."26", not 27
    with an empty "0". ids: pool 0..N-1, test N..N+M-1.
    """
    classes = check_classes("npz", classes)
    if labels not in ("index", "values"):
        raise ConfigError(
            problem(
                f"Dataset 'npz': labels={labels!r}",
                allowed="index (labels are class indices 0..C-1) or values (the label values present are the classes)",
                fix="set data.params.labels",
            )
        )
    p = Path(path).expanduser()
    allowed = "an .npz with arrays " + ", ".join(_NPZ_KEYS)
    if not p.is_file():
        raise DataError(
            problem(
                f"Dataset 'npz': file {str(p)!r} does not exist",
                allowed=allowed,
                fix="pass data.path=... pointing at such a file",
            )
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(
                    problem(
                        f"Dataset 'npz': {str(p)!r} lacks {', '.join(missing)} (it holds {', '.join(z.files)})",
                        allowed=allowed,
                        fix="save the missing arrays under those names",
                    )
                )
            arrays = {k: z[k] for k in _NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            problem(f"Dataset 'npz': cannot read {str(p)!r}: {e}", allowed=allowed, fix="re-create it")
        ) from e

    for side in ("train", "test"):
        x, y = arrays[f"{side}_x"], arrays[f"{side}_y"]
        shape_ok = x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3, 4))
        if x.dtype != np.uint8 or not shape_ok:
            raise DataError(
                problem(
                    f"Dataset 'npz': {side}_x in {str(p)!r} is {x.dtype} {x.shape}",
                    allowed="uint8 (N, H, W) or (N, H, W, C) with C in 1, 3, 4",
                    fix="store images as uint8 in 0..255",
                )
            )
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(
                problem(
                    f"Dataset 'npz': {side}_y in {str(p)!r} is {y.dtype} {y.shape} for {len(x)} images",
                    allowed=f"integer labels of shape ({len(x)},)",
                    fix="store one integer label per image",
                )
            )
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise DataError(
            problem(
                f"Dataset 'npz': train images are {arrays['train_x'].shape[1:]} but test images "
                f"are {arrays['test_x'].shape[1:]}",
                allowed="the same image shape in both splits",
                fix="resize one of them",
            )
        )
    y_train = arrays["train_y"].astype(np.int64)
    y_test = arrays["test_y"].astype(np.int64)
    both = np.concatenate([y_train, y_test])
    if labels == "values":
        values = np.unique(both)
        if classes is not None and len(classes) != len(values):
            raise DataError(
                problem(
                    f"Dataset 'npz': {len(classes)} class names for the {len(values)} label values in {str(p)!r} "
                    f"({values[:10].tolist()}{', ...' if len(values) > 10 else ''})",
                    allowed="one name per distinct label value, in increasing order of value",
                    fix="fix data.params.classes, or leave it out (the values become the names)",
                )
            )
        y_train, y_test = np.searchsorted(values, y_train), np.searchsorted(values, y_test)
        classes = classes if classes is not None else [str(v) for v in values.tolist()]
        both = np.concatenate([y_train, y_test])
    n_classes = len(classes) if classes is not None else int(both.max(initial=-1)) + 1
    bad = (both < 0) | (both >= n_classes)
    if bad.any():
        raise DataError(
            problem(
                f"Dataset 'npz': {int(bad.sum())} label(s) in {str(p)!r} lie outside "
                f"[0, {n_classes}), e.g. {int(both[bad][0])}",
                allowed=f"labels in [0, {n_classes})"
                + (" (C = len(classes))" if classes is not None else " (C = max label + 1)"),
                fix="store labels as class indices 0..C-1, or pass a matching classes list",
            )
        )
    names = classes if classes is not None else [str(c) for c in range(n_classes)]
    n_train, n_test = len(y_train), len(y_test)
    return in_memory_dataset(
        "npz",
        names,
        (np.arange(n_train, dtype=np.int64), y_train, arrays["train_x"]),
        (np.arange(n_train, n_train + n_test, dtype=np.int64), y_test, arrays["test_x"]),
    )

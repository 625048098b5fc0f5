"""Dataset types: a fixed pool/test split of images with stable sample ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alcore.errors import DataError, problem
from alcore.preprocess import Preprocess


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


@dataclass(frozen=True, eq=False)
class Split:
    """One side of a dataset (the pool or the test set).

    Exactly one of ``images`` (in memory) or ``paths`` (files read on demand) is set.

    Attributes:
        ids: ``(N,)`` int64 stable sample ids, unique across pool and test.
        labels: ``(N,)`` int64 class indices in ``[0, n_classes)``. For the pool these are the
            *hidden* truth: only an oracle may read them; -1 where nobody knows it yet (a pool of
            unlabeled images, labeled by people through the human oracle).
        images: ``(N, H, W)`` or ``(N, H, W, C)`` uint8, or None.
        paths: N absolute file paths, or None.
    """

    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def load_batch(self, positions: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
        """Images at ``positions`` as a normalised float tensor ``(B, 3, S, S)``."""
        return preprocess.normalize(self.load_batch_unnormalized(positions, preprocess))

    def load_batch_unnormalized(self, positions: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
        """Images at ``positions`` in [0, 1], resized, 3 channels: ``(B, 3, S, S)``."""
        positions = np.asarray(positions)
        if self.images is not None:
            return preprocess.to_float(self.images[positions])
        assert self.paths is not None
        return preprocess.to_float(read_images([self.paths[i] for i in positions], preprocess.input_size))

    def subset(self, positions: np.ndarray) -> Split:
        positions = np.asarray(positions)
        return Split(
            ids=self.ids[positions],
            labels=self.labels[positions],
            images=None if self.images is None else self.images[positions],
            paths=None if self.paths is None else tuple(self.paths[i] for i in positions),
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: class names, the unlabeled pool and the held-out test set."""

    name: str
    classes: tuple[str, ...]
    pool: Split
    test: Split
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Digest of name, params, ids and image content: the cache key of anything derived."""
        h = hashlib.sha256()
        h.update(repr((self.name, sorted(self.params.items()), self.classes)).encode())
        for split in (self.pool, self.test):
            h.update(np.ascontiguousarray(split.ids, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
            if split.images is not None:
                h.update(np.ascontiguousarray(split.images).tobytes())
            else:
                h.update("\n".join(split.paths or ()).encode())
        return h.hexdigest()[:16]

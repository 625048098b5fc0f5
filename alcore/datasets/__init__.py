"""Datasets: a fixed pool/test split of images with stable sample ids, and their loaders.

>>> ds = load_dataset("digits", test_fraction=0.2)   # doctest: +SKIP
>>> len(ds.pool), len(ds.test), ds.pool.images.shape[1:]   # doctest: +SKIP
(1438, 359, (8, 8))

Registered loaders (see :data:`DATASETS`): ``digits`` (embedded), ``mnist``, ``fashion_mnist``,
``cifar10``, ``npz`` and ``image_folder``. Every loader also takes ``max_pool``, ``max_test`` and
``subset_seed`` (a seeded, stratified subsample that keeps the original ids).
"""

from __future__ import annotations

from alcore.datasets import builtin as _builtin  # noqa: F401  (registers the loaders)
from alcore.datasets import image_folder as _image_folder  # noqa: F401
from alcore.datasets.base import Dataset, Split
from alcore.datasets.loading import DATASETS, load_dataset, register_dataset

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "register_dataset"]

"""The rotation pretext task: rotations, training that learns, per-image losses that never read a
label, and the loss file with its provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ssl import _digits_like

from alcore.datasets.base import Split
from alcore.encoders import create_encoder
from alcore.errors import ConfigError, DataError, FeatureMismatchError
from alcore.pretext import read_pretext_losses, rotate4, rotation_losses, train_rotation, write_pretext_losses

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rotate4_known_answer() -> None:
    x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    views, targets = rotate4(x)
    np.testing.assert_array_equal(targets.numpy(), [0, 1, 2, 3])
    np.testing.assert_array_equal(views[0, 0].numpy(), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(views[1, 0].numpy(), [[1, 3], [0, 2]])  # 90 degrees counter-clockwise
    np.testing.assert_array_equal(views[2, 0].numpy(), [[3, 2], [1, 0]])
    with pytest.raises(ConfigError, match="square"):
        rotate4(torch.zeros(1, 1, 2, 3))


def test_rotation_task_learns_and_scores_every_image_without_labels() -> None:
    split = _digits_like(192)
    enc = create_encoder("cifar_resnet8", input_size=16)
    before = enc.weights_digest()
    hist: list[float] = []
    model = train_rotation(enc, split, epochs=4, batch_size=64, progress=False, random_state=3, loss_history=hist)
    assert enc.weights_digest() == before
    assert len(hist) == 4 and hist[-1] < hist[0] < 1.5  # ln 4 = 1.39 at chance
    losses = rotation_losses(model, split, batch_size=50)
    assert losses.shape == (192,) and losses.dtype == np.float32 and np.isfinite(losses).all()
    assert losses.std() > 0
    # The hidden labels are never read: garbage labels give the same model and losses.
    garbage = Split(ids=split.ids, labels=np.full(192, -7), images=split.images)
    model2 = train_rotation(enc, garbage, epochs=4, batch_size=64, progress=False, random_state=3)
    np.testing.assert_array_equal(rotation_losses(model2, garbage, batch_size=50), losses)


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0), dict(lr=0.0), dict(weight_decay=-1.0)])
def test_bad_params_are_named(kwargs: dict) -> None:
    args = dict(epochs=1, batch_size=8) | kwargs
    with pytest.raises(ConfigError, match="pretext"):
        train_rotation(create_encoder("cifar_resnet8", input_size=16), _digits_like(8), progress=False, **args)


def test_loss_file_round_trip(tmp_path) -> None:
    path = tmp_path / "pretext.parquet"
    ids = np.array([5, 3, 9])
    write_pretext_losses(path, ids, np.array([0.1, 2.0, 1.5]), {"encoder": "abc", "epochs": 2})
    got_ids, got, spec = read_pretext_losses(path)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got, [0.1, 2.0, 1.5], rtol=1e-6)
    assert spec == {"encoder": "abc", "epochs": 2}
    with pytest.raises(ConfigError, match="duplicate"):
        write_pretext_losses(path, np.array([1, 1]), np.array([0.1, 0.2]), {})
    with pytest.raises(DataError, match="pretext stage"):
        read_pretext_losses(tmp_path / "missing.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1], "loss": [0.5]}), tmp_path / "foreign.parquet")
    with pytest.raises(FeatureMismatchError, match="not an alcore pretext-loss file"):
        read_pretext_losses(tmp_path / "foreign.parquet")

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from alcore.datasets import load_dataset
from alcore.encoders import create_encoder
from alcore.errors import DataError, FeatureMismatchError
from alcore.features import FeatureSpec, extract_features, read_features, read_spec, write_features


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_pool=200, max_test=50)


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("cifar_resnet8").eval()


def test_extract_write_read_round_trip(tmp_path, digits, encoder):
    X = extract_features(encoder, digits.pool, batch_size=64, device="cpu", progress=False)
    assert X.shape == (len(digits.pool), encoder.config.feature_dim) and X.dtype == np.float32
    spec = FeatureSpec.for_encoder(encoder, digits.pool, dataset=digits.fingerprint(), split_name="pool")
    path = tmp_path / "pool.parquet"
    write_features(path, digits.pool.ids, X, spec)
    fs = read_features(path, expect=spec)
    np.testing.assert_array_equal(fs.ids, digits.pool.ids)
    np.testing.assert_array_equal(fs.X, X)
    assert fs.spec == spec
    # the layout the docs promise: an id column and one fixed-size float32 list column
    schema = pq.read_schema(path)
    assert str(schema.field("id").type) == "int64"
    ftype = schema.field("features").type
    assert ftype.list_size == spec.dim and str(ftype.value_type) == "float"
    meta = json.loads(schema.metadata[b"alcore.feature_spec"])
    assert meta["weights_digest"] == encoder.weights_digest()
    assert json.loads(meta["preprocess"])["input_size"] == 32


def test_batching_does_not_change_features(digits, encoder):
    a = extract_features(encoder, digits.test, batch_size=7, device="cpu", progress=False)
    b = extract_features(encoder, digits.test, batch_size=50, device="cpu", progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_spec_mismatch_is_refused(tmp_path, digits, encoder):
    X = extract_features(encoder, digits.test, device="cpu", progress=False)
    spec = FeatureSpec.for_encoder(encoder, digits.test, dataset=digits.fingerprint(), split_name="test")
    path = tmp_path / "t.parquet"
    write_features(path, digits.test.ids, X, spec)
    other = create_encoder("cifar_resnet8")
    with pytest.raises(FeatureMismatchError, match="weights_digest"):
        read_features(
            path, expect=FeatureSpec.for_encoder(other, digits.test, dataset=digits.fingerprint(), split_name="test")
        )
    with pytest.raises(FeatureMismatchError, match="weights_digest"):
        spec.check_compatible(FeatureSpec.for_encoder(other, digits.test, dataset="x", split_name="pool"))


def test_write_refuses_features_that_do_not_match_their_spec(tmp_path, digits, encoder):
    spec = FeatureSpec.for_encoder(encoder, digits.test, dataset="d", split_name="test")
    X = np.zeros((len(digits.test), spec.dim), np.float32)
    with pytest.raises(FeatureMismatchError):
        write_features(tmp_path / "f.parquet", digits.test.ids[::-1], X, spec)  # other id order
    assert not (tmp_path / "f.parquet").exists()


def test_missing_file_and_foreign_parquet(tmp_path):
    with pytest.raises(DataError, match="run the features stage"):
        read_spec(tmp_path / "absent.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(FeatureMismatchError, match="no alcore feature spec"):
        read_features(tmp_path / "foreign.parquet")

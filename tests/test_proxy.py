import numpy as np
import pytest
from sklearn.datasets import load_digits

from alcore.errors import ConfigError
from alcore.proxy import ProxyMLP


@pytest.fixture(scope="module")
def xy():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def test_learns_digits_from_few_labels(xy):
    X, y = xy
    m = ProxyMLP(epochs=60, random_state=0).fit(X[:300], y[:300], 10)
    assert (m.predict(X[1000:]) == y[1000:]).mean() > 0.85
    p = m.predict_proba(X[1000:1010])
    assert p.shape == (10, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert m.embed(X[:5]).shape == (5, 256)


def test_same_seed_same_model_and_params_untouched(xy):
    X, y = xy
    a = ProxyMLP(epochs=5, random_state=3).fit(X[:64], y[:64], 10).predict_proba(X[:20])
    b = ProxyMLP(epochs=5, random_state=3).fit(X[:64], y[:64], 10).predict_proba(X[:20])
    np.testing.assert_array_equal(a, b)
    m = ProxyMLP(hidden=32, lr=0.1)
    assert m.get_params()["hidden"] == 32 and not hasattr(m, "net_")


def test_tiny_labeled_sets_with_batchnorm(xy):
    X, y = xy
    m = ProxyMLP(epochs=3).fit(X[:3], y[:3], 10)  # batch of 3, ragged tail dropped safely
    assert m.predict(X[:4]).shape == (4,)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"hidden": 0}, "hidden"), ({"epochs": 1.5}, "epochs"), ({"lr": 0}, "lr"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_params_are_refused_at_fit(xy, kwargs, match):
    X, y = xy
    with pytest.raises(ConfigError, match=match):
        ProxyMLP(**kwargs).fit(X[:10], y[:10], 10)


def test_bad_data(xy):
    X, y = xy
    with pytest.raises(ConfigError, match="at least 2"):
        ProxyMLP().fit(X[:1], y[:1], 10)
    with pytest.raises(ConfigError, match="outside"):
        ProxyMLP().fit(X[:10], y[:10], 5)
    with pytest.raises(ConfigError, match="not fitted"):
        ProxyMLP().predict_proba(X[:2])
    m = ProxyMLP(epochs=1).fit(X[:10], y[:10], 10)
    with pytest.raises(ConfigError, match=r"\(n, 64\)"):
        m.predict_proba(X[:2, :10])

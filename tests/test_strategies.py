"""The strategy contract, run on every registered strategy, and known answers for the scores."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.errors import ConfigError, PoolExhaustedError, UnknownNameError
from alcore.strategies import (
    REQUIREMENTS,
    STRATEGIES,
    SelectionContext,
    Strategy,
    check_random_state,
    check_strategy,
    entropy_scores,
    least_confidence_scores,
    make_strategy,
    margin_scores,
    top_n,
)
from alcore.strategies.checks import N_CLASSES, N_DIM, N_LABELED, N_POOL, make_context

ALL = STRATEGIES.names()
WARM = [name for name in ALL if not STRATEGIES.get(name).cold_start]
COLD = [name for name in ALL if STRATEGIES.get(name).cold_start]


def test_registry_holds_the_basic_strategies() -> None:
    assert {"random", "margin", "entropy", "least_confidence"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_declares_its_contract(name: str) -> None:
    cls = STRATEGIES.get(name)
    assert issubclass(cls, Strategy)
    assert cls.name == name
    assert isinstance(cls.requires, frozenset) and cls.requires <= REQUIREMENTS
    assert isinstance(cls.cold_start, bool)


@pytest.mark.parametrize("n", [1, 7, 50])
@pytest.mark.parametrize("name", ALL)
def test_returns_n_distinct_unlabeled_pool_ids(name: str, n: int) -> None:
    ctx = make_context()
    labels_before = ctx.labels.copy()
    ids = make_strategy(name).select(ctx, n, random_state=0)
    assert ids.dtype == np.int64 and ids.shape == (n,)
    assert np.unique(ids).size == n
    assert np.isin(ids, ctx.pool_ids).all()
    labeled_ids = ctx.pool_ids[ctx.labels >= 0]
    assert not np.isin(ids, labeled_ids).any()
    np.testing.assert_array_equal(ctx.labels, labels_before)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_ids(name: str) -> None:
    a = make_strategy(name).select(make_context(), 20, random_state=123)
    b = make_strategy(name).select(make_context(), 20, random_state=123)
    gen = make_strategy(name).select(make_context(), 20, random_state=np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, gen)


def test_random_differs_across_seeds() -> None:
    ctx = make_context()
    a = make_strategy("random").select(ctx, 20, random_state=1)
    b = make_strategy("random").select(ctx, 20, random_state=2)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_pool_exhausted_names_both_numbers(name: str) -> None:
    ctx = make_context()
    n_unlabeled = N_POOL - N_LABELED
    with pytest.raises(PoolExhaustedError, match=rf"{n_unlabeled + 1}.*{n_unlabeled}"):
        make_strategy(name).select(ctx, n_unlabeled + 1, random_state=0)


@pytest.mark.parametrize("bad", [0, -3, 2.0, "5", True, None])
@pytest.mark.parametrize("name", ALL)
def test_bad_n_is_a_config_error(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match="n="):
        make_strategy(name).select(make_context(), bad, random_state=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_all_unlabeled_when_n_equals_unlabeled(name: str) -> None:
    ctx = make_context()
    ids = make_strategy(name).select(ctx, N_POOL - N_LABELED, random_state=0)
    assert set(ids.tolist()) == set(ctx.pool_ids[ctx.labels < 0].tolist())


@pytest.mark.parametrize("name", ALL)
def test_numpy_int_n_is_accepted(name: str) -> None:
    ids = make_strategy(name).select(make_context(), np.int64(3), random_state=0)
    assert ids.shape == (3,)


@pytest.mark.parametrize("name", ALL)
def test_get_params_round_trip(name: str) -> None:
    strategy = make_strategy(name)
    params = strategy.get_params()
    assert isinstance(params, dict)
    twin = make_strategy(name, **params)
    assert twin.get_params() == params
    assert type(twin) is type(strategy)
    assert repr(strategy).startswith(type(strategy).__name__)


@pytest.mark.parametrize("name", ALL)
def test_unknown_param_lists_allowed(name: str) -> None:
    with pytest.raises(ConfigError, match="no parameter 'bogus'.*Allowed"):
        make_strategy(name, bogus=1)


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(UnknownNameError, match="margin"):
        make_strategy("marginn")


@pytest.mark.parametrize("name", ALL)
def test_speaks_ids_not_positions(name: str) -> None:
    """With non-contiguous huge ids, the same choice comes back in ids, shifted accordingly."""
    k = np.arange(N_POOL, dtype=np.int64)
    big = 10**12 + 7 * k[::-1]  # non-contiguous, descending
    plain = make_strategy(name).select(make_context(), 25, random_state=5)
    ids = make_strategy(name).select(make_context(pool_ids=big), 25, random_state=5)
    assert np.isin(ids, big).all() and ids.min() >= 10**12
    np.testing.assert_array_equal(ids, big[plain])


@pytest.mark.parametrize("name", WARM)
def test_warm_strategies_refuse_without_labels(name: str) -> None:
    ctx = make_context(n_labeled=0, with_model=False)
    with pytest.raises(ConfigError, match="cold-start"):
        make_strategy(name).select(ctx, 5, random_state=0)


@pytest.mark.parametrize("name", [n for n in ALL if STRATEGIES.get(n).requires & {"model"}])
def test_model_strategies_refuse_without_model(name: str) -> None:
    ctx = make_context(with_model=False)
    with pytest.raises(ConfigError, match="proxy model"):
        make_strategy(name).select(ctx, 5, random_state=0)


@pytest.mark.parametrize("name", COLD)
def test_cold_start_strategies_need_nothing(name: str) -> None:
    ctx = make_context(n_labeled=0, with_model=False)
    ids = make_strategy(name).select(ctx, 10, random_state=0)
    assert ids.shape == (10,) and np.unique(ids).size == 10


# -- SelectionContext --------------------------------------------------------------------------


def test_context_validates_shapes() -> None:
    ctx = make_context()
    good = dict(pool_ids=ctx.pool_ids, features=ctx.features, labels=ctx.labels, n_classes=4)
    with pytest.raises(ConfigError, match="duplicates"):
        SelectionContext(**{**good, "pool_ids": np.zeros(N_POOL, dtype=np.int64)})
    with pytest.raises(ConfigError, match="features"):
        SelectionContext(**{**good, "features": ctx.features[:-1]})
    with pytest.raises(ConfigError, match="labels"):
        SelectionContext(**{**good, "labels": ctx.labels[:-1]})
    bad = ctx.labels.copy()
    bad[3] = 4
    with pytest.raises(ConfigError, match=r"outside \[-1, 4\)"):
        SelectionContext(**{**good, "labels": bad})
    with pytest.raises(ConfigError, match="n_classes"):
        SelectionContext(**{**good, "n_classes": 1})
    with pytest.raises(ConfigError, match="round"):
        SelectionContext(**good, round=0)
    with pytest.raises(ConfigError, match="n_rounds"):
        SelectionContext(**good, n_rounds=0)
    with pytest.raises(ConfigError, match=r"extras\['pretext_loss'\]"):
        SelectionContext(**good, extras={"pretext_loss": np.zeros(N_POOL - 1)})
    with pytest.raises(ConfigError, match="finite"):
        SelectionContext(**good, extras={"pretext_loss": np.full(N_POOL, np.nan)})


def test_strategy_needing_an_extra_says_which_and_how() -> None:
    ctx = make_context()
    bare = SelectionContext(pool_ids=ctx.pool_ids, features=ctx.features, labels=ctx.labels, n_classes=4, n_rounds=4)
    with pytest.raises(ConfigError, match="pretext_loss.*pretext stage"):
        make_strategy("pt4al").select(bare, 5, random_state=0)


def test_context_probs_are_aligned_with_unlabeled_positions() -> None:
    ctx = make_context()
    probs = ctx.probs()
    positions = ctx.unlabeled_positions()
    assert probs.shape == (positions.size, N_CLASSES)
    np.testing.assert_allclose(probs, ctx.model.predict_proba(ctx.features[positions]))
    assert ctx.probs() is probs  # cached
    assert ctx.embeddings().shape == (positions.size, N_DIM)


def test_context_reads_nearly_unlabeled_chunks_in_place() -> None:
    """A chunk of rows with a few labeled ones among them goes to the model as a slice of the
    features (no gathered copy); the labeled rows' outputs are dropped, the rest is as gathered."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, N_DIM)).astype(np.float32)
    labels = np.full(400, -1)
    labels[[5, 150, 390]] = 1  # sparse labeled rows: dense chunks
    labels[200:240] = 0  # a labeled block: the chunk around it is gathered
    seen = []
    base = make_context().model

    class Spy:
        def predict_proba(self, x):
            seen.append(np.shares_memory(x, X))
            return base.predict_proba(x)

    ctx = SelectionContext(
        pool_ids=np.arange(400), features=X, labels=labels, n_classes=N_CLASSES, model=Spy(), chunk_size=100
    )
    unl = ctx.unlabeled_positions()
    np.testing.assert_allclose(ctx.probs(), base.predict_proba(X[unl]), rtol=1e-6)
    # chunks of 100 unlabeled rows: 0-100 (row 5 labeled: a slice), 101-300 (the block: gathered), then slices
    assert seen == [True, False, True, True]


def test_gathered_chunks_share_one_buffer_and_a_model_may_return_its_input() -> None:
    """Scattered unlabeled rows are gathered chunk by chunk into one reused buffer; a model whose
    embedding is its input (a view of that buffer) still gets every chunk's own rows back."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, N_DIM)).astype(np.float32)
    labels = np.full(300, -1)
    labels[::2] = 0  # every other row labeled: no chunk is dense, every chunk is gathered
    inputs = []

    class Identity:
        def predict_proba(self, x):
            return np.full((len(x), N_CLASSES), 1.0 / N_CLASSES)

        def embed(self, x):
            inputs.append(x)
            return x

    ctx = SelectionContext(
        pool_ids=np.arange(300), features=X, labels=labels, n_classes=N_CLASSES, model=Identity(), chunk_size=40
    )
    np.testing.assert_array_equal(ctx.embeddings(), X[1::2])
    assert len(inputs) == 4 and all(np.shares_memory(inputs[0], x) for x in inputs)  # one buffer


def test_context_checks_model_output_shape() -> None:
    class Wrong:
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return np.full((len(X), 3), 1 / 3)

        def embed(self, X: np.ndarray) -> np.ndarray:
            return X

    ctx = make_context()
    ctx.model = Wrong()
    with pytest.raises(ConfigError, match="returned shape"):
        ctx.probs()

    class Short:  # one row short, on a chunk read in place (one labeled row: a dense span)
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return np.full((len(X) - 1, N_CLASSES), 1 / N_CLASSES)

    labels = np.full(50, -1)
    labels[10] = 0
    X = np.zeros((50, N_DIM), dtype=np.float32)
    dense = SelectionContext(pool_ids=np.arange(50), features=X, labels=labels, n_classes=N_CLASSES, model=Short())
    with pytest.raises(ConfigError, match="returned shape .* for 50 rows"):
        dense.probs()


def test_context_reads_memmap_features(tmp_path) -> None:
    ctx = make_context()
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=ctx.features.shape)
    mm[:] = ctx.features
    ctx2 = SelectionContext(pool_ids=ctx.pool_ids, features=mm, labels=ctx.labels, n_classes=4, model=ctx.model)
    assert ctx2.features is mm
    a = make_strategy("margin").select(ctx, 10, random_state=0)
    b = make_strategy("margin").select(ctx2, 10, random_state=0)
    np.testing.assert_array_equal(a, b)


def test_check_random_state() -> None:
    g = np.random.default_rng(0)
    assert check_random_state(g) is g
    assert isinstance(check_random_state(None), np.random.Generator)
    assert check_random_state(3).random() == np.random.default_rng(3).random()
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ConfigError, match="random_state"):
            check_random_state(bad)  # type: ignore[arg-type]


# -- known answers -------------------------------------------------------------------------------

ROWS = np.array(
    [
        [0.5, 0.5, 0.0],  # a perfect tie between two classes
        [1.0, 0.0, 0.0],  # certain
        [0.7, 0.2, 0.1],
        [1 / 3, 1 / 3, 1 / 3],  # uniform
    ]
)


def test_margin_known_answers() -> None:
    np.testing.assert_allclose(margin_scores(ROWS), [0.0, -1.0, -0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(margin_scores([[0.5, 0.5], [1.0, 0.0]]), [0.0, -1.0])


def test_entropy_known_answers() -> None:
    e = entropy_scores(ROWS)
    np.testing.assert_allclose(e[[0, 1, 3]], [np.log(2), 0.0, np.log(3)], atol=1e-12)
    assert 0 < e[2] < np.log(3)
    assert not np.signbit(e[1])  # 0 log 0 = 0, not -0.0
    for c in (2, 10, 1000):
        np.testing.assert_allclose(entropy_scores(np.full((1, c), 1 / c)), [np.log(c)])


def test_least_confidence_known_answers() -> None:
    np.testing.assert_allclose(least_confidence_scores(ROWS), [0.5, 0.0, 0.3, 2 / 3])


@pytest.mark.parametrize("score", [margin_scores, entropy_scores, least_confidence_scores])
def test_half_half_most_uncertain_and_certain_least(score) -> None:
    s = score(np.array([[0.9, 0.1], [0.5, 0.5], [1.0, 0.0], [0.6, 0.4]]))
    assert s.shape == (4,) and s.dtype == np.float64
    assert s.argmax() == 1 and s.argmin() == 2


@pytest.mark.parametrize("score", [margin_scores, entropy_scores, least_confidence_scores])
@pytest.mark.parametrize(
    "bad",
    [
        np.array([0.5, 0.5]),  # 1-D
        np.array([[1.0]]),  # one class
        np.array([[0.5, np.nan]]),
        np.array([[0.7, 0.7]]),  # does not sum to 1
        np.array([[1.5, -0.5]]),  # negative
    ],
)
def test_scores_validate_probs(score, bad: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        score(bad)


def test_float32_probs_score() -> None:
    p = np.array([[0.6, 0.4], [0.5, 0.5]], dtype=np.float32)
    for score in (margin_scores, entropy_scores, least_confidence_scores):
        assert score(p).argmax() == 1


def test_top_n_orders_by_score() -> None:
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(top_n(np.array([0.1, 0.9, 0.5, 0.7]), 3, rng), [1, 3, 2])
    assert top_n(np.array([0.1, 0.9]), 0, rng).shape == (0,)


def test_top_n_breaks_ties_through_rng() -> None:
    scores = np.array([1.0, 3.0, 3.0, 3.0, 2.0])
    firsts = {int(top_n(scores, 1, np.random.default_rng(seed))[0]) for seed in range(60)}
    assert firsts == {1, 2, 3}  # every tied index wins under some seed, no other does
    for seed in range(5):
        a = top_n(scores, 3, np.random.default_rng(seed))
        b = top_n(scores, 3, np.random.default_rng(seed))
        np.testing.assert_array_equal(a, b)
        assert set(a.tolist()) == {1, 2, 3}


def test_top_n_validates() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError):
        top_n(np.array([1.0, np.nan]), 1, rng)
    with pytest.raises(ConfigError):
        top_n(np.array([1.0, 2.0]), 3, rng)


class FixedScorer:
    """Returns hand-made probabilities keyed by the first feature (= the row's index)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.table = probs

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.table[X[:, 0].astype(int)]

    def embed(self, X: np.ndarray) -> np.ndarray:
        return X


@pytest.mark.parametrize("name", ["margin", "entropy", "least_confidence"])
def test_uncertainty_strategies_pick_the_known_ids(name: str) -> None:
    probs = np.array(
        [
            [0.98, 0.01, 0.01],  # labeled
            [0.34, 0.33, 0.33],  # the most uncertain under all three
            [1.0, 0.0, 0.0],
            [0.5, 0.45, 0.05],  # second
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
        ]
    )
    ids = np.array([50, 40, 30, 20, 10, 0], dtype=np.int64)
    ctx = SelectionContext(
        pool_ids=ids,
        features=np.arange(6, dtype=np.float32)[:, None],
        labels=np.array([0, -1, -1, -1, -1, -1]),
        n_classes=3,
        model=FixedScorer(probs),
    )
    np.testing.assert_array_equal(make_strategy(name).select(ctx, 2, random_state=0), [40, 20])
    np.testing.assert_array_equal(make_strategy(name).select(ctx, 5, random_state=0)[-1], 30)


# -- check_strategy: the contract as a public check -------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_check_strategy_passes_every_registered_strategy(name: str) -> None:
    check_strategy(STRATEGIES.get(name))


class FirstUnlabeled(Strategy):
    """A user's own strategy: the unlabeled samples with the largest first feature."""

    name = "first_unlabeled"
    _parameter_constraints = {"descending": ["boolean"]}

    def __init__(self, *, descending: bool = True) -> None:
        self.descending = descending

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        pos = ctx.unlabeled_positions()
        v = np.asarray(ctx.features[pos, 0], dtype=np.float64)
        return pos[top_n(v if self.descending else -v, n, rng)]


def test_check_strategy_on_a_users_own_strategy() -> None:
    check_strategy(FirstUnlabeled)
    check_strategy(FirstUnlabeled, {"descending": False})


@pytest.mark.parametrize(
    "break_it, check",
    [
        ({"_parameter_constraints": {}}, "declares its parameter constraints"),
        ({"_select_positions": lambda self, ctx, n, rng: np.arange(n)}, "returns n distinct unlabeled pool ids"),
        (
            {
                "_select_positions": lambda self, ctx, n, rng: np.random.default_rng().permutation(
                    ctx.unlabeled_positions()
                )[:n]
            },
            "is deterministic under a seed",
        ),
        (  # claims to start cold, but reads the model's probabilities
            {
                "cold_start": True,
                "_select_positions": lambda self, ctx, n, rng: ctx.unlabeled_positions()[
                    np.argsort(ctx.probs()[:, 0], kind="stable")[:n]
                ],
            },
            "starts cold",
        ),
        ({"requires": frozenset({"gpu"})}, "declares what it requires"),
    ],
)
def test_check_strategy_names_the_broken_promise(break_it: dict, check: str) -> None:
    from alcore.strategies.checks import StrategyContractError

    broken = type("Broken", (FirstUnlabeled,), dict(break_it))
    with pytest.raises(StrategyContractError, match=check):
        check_strategy(broken)

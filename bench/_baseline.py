"""The obvious baseline every bench prints beside its numbers: scikit-learn's LogisticRegression
(C = 1) on standardised frozen features, fitted on the labeled rows, scored on the test rows. A
network or a selection is only a result once it beats this on the same data (one definition here
for bench/asvp.py, as3l.py, encoders.py and recipe.py)."""

from __future__ import annotations

from typing import Any

import numpy as np


def logreg() -> Any:
    """An unfitted ``StandardScaler`` + ``LogisticRegression(C=1, max_iter=5000)`` pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))


def logreg_accuracy(X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> float:
    """Test accuracy in [0, 1] of :func:`logreg` fitted on ``(X_train, y_train)``."""
    return float(np.mean(logreg().fit(X_train, y_train).predict(X_test) == np.asarray(y_test)))

"""The library imports and works without Prefect, DVC or MLflow, and does nothing at import."""

import subprocess
import sys

CODE = """
import sys
for name in ("prefect", "mlflow", "dvc"):
    sys.modules[name] = None  # any import of them now fails
import importlib, pkgutil, alcore
for m in pkgutil.walk_packages(alcore.__path__, "alcore."):
    importlib.import_module(m.name)
from alcore.datasets import load_dataset
from alcore.strategies import make_strategy
assert len(load_dataset("digits").pool) > 0
print("ok")
"""


def test_alcore_imports_without_orchestration():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr

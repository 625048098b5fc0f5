# The two commands of the README's quick start: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export UV_PYTHON := 3.11

.PHONY: setup demo test test-all lint clean chromium ui-screenshot

# uv installs from the committed uv.lock (uv takes torch from the registry: the machine's pip
# would pick a CPU-only torch that torchvision cannot import with).
.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --locked --extra pipeline --extra encoders
	@touch $@

setup: .venv/.synced

demo: setup
	$(UV) run --no-sync dvc repro
	$(UV) run --no-sync alcore show

test: setup
	$(UV) run --no-sync pytest -q

test-all: setup
	$(UV) run --no-sync pytest -q -m "slow or not slow" --run-slow

# Debian's chromium, for the Prefect UI screenshot (root: apt-get; otherwise sudo apt-get).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# The Prefect UI showing a labeling cycle's flow run and its tasks -> docs/prefect-ui-labeling-cycle.png
ui-screenshot: setup chromium
	$(UV) run --no-sync python scripts/ui_screenshot.py --out docs/prefect-ui-labeling-cycle.png

lint: setup
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .

clean:
	rm -rf .prefect mlflow.db mlartifacts data/dataset.json models features runs reports

# The two commands of the README's quick start: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export UV_PYTHON := 3.11

.PHONY: setup demo test test-all lint clean chromium ui-screenshot label-studio test-label-studio label-studio-screenshot

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

# A real Label Studio in its own environment (it pins versions Prefect cannot run with), from the
# lock's `label-studio` group; the slow test tests/test_label_studio.py starts it on 127.0.0.1.
.venv-label-studio/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) export -q --frozen --only-group label-studio --no-emit-project --no-hashes -o .venv-label-studio.txt
	$(UV) venv --allow-existing --python 3.11 .venv-label-studio
	$(UV) pip install --python .venv-label-studio/bin/python -r .venv-label-studio.txt
	@rm -f .venv-label-studio.txt
	@touch $@

label-studio: .venv-label-studio/.synced

test-label-studio: setup label-studio
	$(UV) run --no-sync pytest -q --run-slow tests/test_label_studio.py

# Label Studio showing alcore's default job (images embedded) -> docs/label-studio-default-job.png
label-studio-screenshot: setup label-studio chromium
	$(UV) run --no-sync python scripts/label_studio_screenshot.py --out docs/label-studio-default-job.png

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

# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned dependencies first (constraints.txt pins every
# transitive one); the install is redone only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
UI_PORT ?= 5000
SERVE_PORT ?= 5001
TRACKING_PORT ?= 5050
# The project's embedded MLflow store (pipeline.tracking.store).
STORE_URI := sqlite:///$(CURDIR)/mlflow.db

# Stage commands in dvc.yaml say `python`: make it the project's.
export PATH := $(abspath $(BIN)):$(PATH)

BEST := reports/best

.PHONY: help install run test test-fast mutation sweep best bench bench-install bench-quick ui serve lint format params clean \
	cluster-install tracking-server tracking-server-stop plots

help:
	@echo "make run        install, then run the pipeline (dvc repro)"
	@echo "make test       install, then run the whole test suite"
	@echo "make test-fast  the test suite without the slow end-to-end tests"
	@echo "make mutation   plant known bugs one at a time and check the tests catch each (~25 min)"
	@echo "make sweep      the accurate grid of conf/sweep/best.yaml (about 6 minutes)"
	@echo "make best       train conf/experiment/best.yaml, evaluate it on the test set (reports/best/)"
	@echo "make bench      speed benchmark: ours vs Keras/TF, scikit-learn, PyTorch, bare NumPy, quiet and loaded (~30 min)"
	@echo "make bench-install  install the benchmark's optional peers (scikit-learn, PyTorch CPU)"
	@echo "make bench-quick    a few-minute smoke run of the benchmark (numbers mean nothing)"
	@echo "make ui         MLflow UI on the project's store (http://127.0.0.1:$(UI_PORT))"
	@echo "make serve      serve models:/mnist-mlp@champion over HTTP (http://127.0.0.1:$(SERVE_PORT)/invocations)"
	@echo "make cluster-install  install Ray and Hydra's Ray launcher (sweeps with hydra/launcher=ray)"
	@echo "make tracking-server  the team's MLflow server on PostgreSQL (http://127.0.0.1:$(TRACKING_PORT))"
	@echo "make tracking-server-stop  stop it (its data stays in tracking-server/)"
	@echo "make plots      dvc plots show, rendered offline (dvc_plots/index.html)"
	@echo "make lint       ruff check + format check"
	@echo "make params     regenerate params.yaml from conf/"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	dvc repro

test: install
	pytest $(PYTEST_ARGS)

test-fast: install
	pytest -m "not slow" $(PYTEST_ARGS)

# Not part of `make test`: each planted bug reruns the fast tests that guard its code.
MUTATION_ARGS ?=
mutation: install
	python tests/mutants.py $(MUTATION_ARGS)

sweep: install
	python -m pipeline.sweep +sweep=best

# The most accurate configuration found (chosen on validation data): its composed config, the
# model trained on the training split (the validation split held out for early stopping), and
# its test-set metrics in reports/best/metrics.json.
best: install
	python -m pipeline.params experiment=best --out $(BEST)/params.yaml
	python -m pipeline.train --params $(BEST)/params.yaml --model models/best.npz --reports $(BEST)
	python -m pipeline.evaluate --params $(BEST)/params.yaml --model models/best.npz \
		--train-reports $(BEST) --reports $(BEST)/evaluate --metrics $(BEST)/metrics.json

bench-install: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,bench]"

# Ray and Hydra's Ray launcher plugin, pinned (the `cluster` extra): hydra/launcher=ray|ray_local.
cluster-install: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,cluster]"

# PostgreSQL (Debian's package) + `mlflow server`, everything under tracking-server/ (TRACKING_DIR);
# see scripts/tracking-server for the settings.
tracking-server: install
	TRACKING_PORT=$(TRACKING_PORT) scripts/tracking-server start

tracking-server-stop:
	TRACKING_PORT=$(TRACKING_PORT) scripts/tracking-server stop

# The project's plots as HTML that needs no internet (the template of .dvc/config bundles Vega).
plots: install
	dvc plots show

bench: install
	python -m benchmarks.bench $(BENCH_ARGS)

bench-quick: install
	python -m benchmarks.bench --quick --no-mlflow $(BENCH_ARGS)

# Opened as every command opens it first: a moved or copied project's artifact locations come
# back beside the store, runs whose process died end KILLED.
# MLflow 3.17's UI opens on its GenAI view: the link goes to the model training one.
ui: install
	python -m pipeline.tracking --uri "$(STORE_URI)"
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning"
	mlflow ui --backend-store-uri "$(STORE_URI)" --host 127.0.0.1 --port $(UI_PORT)

# The best model a sweep has found (MLFLOW_TRACKING_URI, else the project's store), served by
# `mlflow models serve` in this environment (no conda or virtualenv is created).
serve: install
	python -m pipeline.serve --port $(SERVE_PORT)

lint: install
	ruff check . && ruff format --check .

format: install
	ruff format . && ruff check --fix .

params: install
	python -m pipeline.params

clean:
	rm -rf .pytest_cache .ruff_cache */__pycache__

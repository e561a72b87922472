VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint format perf

setup:
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# CPU torch first, so nothing below pulls a CUDA build
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,models,diffusers]"

test:
	HF_HUB_OFFLINE=1 $(PY) -m pytest

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

perf:
	$(PY) perf/loader_index.py

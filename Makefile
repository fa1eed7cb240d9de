# The two commands of the README: `make demo` and `make test`; `make try` for a first minute.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= artifacts
MODELS := runtime/models
# Every install takes the exact versions of the lock (one file for x86_64 and arm64, Python 3.11);
# `make lock` refreshes it on purpose, `make test-latest` runs the suite on the newest releases.
LOCK   := requirements.lock
UV_VERSION := 0.13.9
UV     := $(BIN)/uv
INSTALL = $(UV) pip install --quiet --python $(BIN)/python --constraints $(LOCK)
LOCK_EXTRAS := --extra all --extra dev --extra distributed
# The consumers of our files that cannot share TensorFlow's venv (MediaPipe, tflite-support), in their own
CONSUMERS := .venv-consumers
CONSUMERS_LOCK := benchmarks/consumers.lock

.PHONY: consumers demo test try test-distributed bench-distributed data train export bench models clean arm64-check compare serve bench-serve own-classes lock test-latest

## demo: set up, train float + QAT, export every format, parity gate, results table
demo: $(VENV)/.all data train export bench
	$(BIN)/python -m export.results $(OUT)

## test: the test suite (uses the bundled models and small training runs), in two processes,
## a test file to each (its module fixtures, servers and videos, made once)
test: $(VENV)/.dev $(CONSUMERS)/.done data
	FASHION_EDGE_LOCK=$(LOCK) FASHION_EDGE_CONSUMERS=$(CONSUMERS)/bin/python $(BIN)/python -m pytest -q --numprocesses auto --maxprocesses 4 --dist loadfile

## try: a minute with the bundled model: installs the runtime and the camera demo (no TensorFlow),
## classifies the sample photos and a short camera clip (samples/), prints the answers and the speed
try: $(VENV)/.try
	$(BIN)/python samples/try.py

## lock: refresh requirements.lock to the newest releases that pyproject.toml's ranges allow
lock: $(UV)
	$(UV) pip compile --quiet --upgrade --universal --python-version 3.11 $(LOCK_EXTRAS) pyproject.toml -o $(LOCK)
	$(UV) pip compile --quiet --upgrade --universal --python-version 3.11 benchmarks/consumers.in -o $(CONSUMERS_LOCK)

## test-latest: the suite against the newest releases (not the lock), in .venv-latest: drift seen early
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest LOCK=/dev/null

## test-distributed: two training workers on 127.0.0.1 (Fashion-MNIST and a folder, exported through
## the parity gate; a SIGKILLed worker resumes) and a Ray Tune search; deselected by `make test`
test-distributed: $(VENV)/.distributed data
	$(BIN)/python -m pytest -q -m distributed tests/test_distributed.py

## bench-distributed: one epoch on 1 worker vs 2 workers, and a 4-trial search local vs Ray (about 15 min)
bench-distributed: $(VENV)/.distributed data
	$(BIN)/python benchmarks/distributed.py --out $(OUT)/distributed.json

train: $(VENV)/.all data
	$(BIN)/python -m train --out $(OUT)

export: $(VENV)/.all data
	$(BIN)/python -m export --format all --model $(OUT)/qat_model.h5 --out $(OUT)

bench: $(VENV)/.all data
	$(BIN)/python benchmarks/keras_latency.py --models $(addprefix $(OUT)/,fashion_int8.tflite fashion_int8.onnx \
	  fashion_float.onnx) --out $(OUT)/bench.json --keras-model $(OUT)/float_model.h5

## serve: the web page and HTTP API on http://127.0.0.1:8000/ (bundled int8 model)
serve: $(VENV)/.all
	$(BIN)/python -m runtime.serve

## bench-serve: load test, our server against Flask + Keras in the same run (needs wrk)
bench-serve: $(VENV)/.dev data
	$(BIN)/python benchmarks/serve_load.py --keras-model $(OUT)/float_model.h5 --out $(OUT)/serve_load.json

## compare: every architecture trained alike, QAT, int8; table, Pareto plot (under an hour)
compare: $(VENV)/.all data
	$(BIN)/python -m experiments.compare --out $(OUT)/compare

## own-classes: example folders (digits, faces, garment photos, a messy folder, harder object photos),
## each trained with the defaults, exported and scored through the Predictor on its held-out images,
## beside an SVM and logistic regression on the same crops and the Keras tutorial's CNN given the same
## time (about 2 hours)
own-classes: $(VENV)/.dev data
	$(BIN)/python benchmarks/example_folders.py $(OUT)/folders
	$(BIN)/python benchmarks/own_classes.py $(addprefix $(OUT)/folders/,digits faces garments messy objects) \
	  --out $(OUT)/own_classes

## models: the bundled models (runtime/models/NAME: files, reports, card), each with its recipe, through the
## parity gate (hours on 2 cores: run it in the background; run it again after a stop and training resumes)
models: $(VENV)/.all data
	$(BIN)/python tools/bundle_models.py --out $(OUT)/models

## arm64-check: runtime tests, CLI and camera demo on emulated arm64 Debian bookworm (Raspberry Pi
## OS 64-bit), answers compared with x86; root; minutes (the rootfs is cached in ~/.cache/fashion-edge)
arm64-check: $(VENV)/.try
	$(BIN)/python tools/arm64_check.py

# The official files: found locally, else Debian's package (as root), else the mirror.
data: $(VENV)/.all
	@$(BIN)/python -m train.data --no-download 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); } || true
	$(BIN)/python -m train.data

## consumers: MediaPipe Tasks and tflite-support in .venv-consumers (benchmarks/consumers.py runs them;
## tflite-support needs the libusb library, installed from Debian as root)
consumers: $(CONSUMERS)/.done

$(CONSUMERS)/.done: $(CONSUMERS_LOCK) | $(UV)
	@ldconfig -p 2>/dev/null | grep -q libusb-1.0 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq libusb-1.0-0 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0)); } || true
	$(UV) venv --quiet --allow-existing --python $(BIN)/python $(CONSUMERS)
	$(UV) pip install --quiet --python $(CONSUMERS)/bin/python -r $(CONSUMERS_LOCK)
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)

$(VENV)/.try: pyproject.toml $(LOCK) | $(UV)
	$(INSTALL) -e '.[tflite,camera]'
	touch $@

$(VENV)/.all: pyproject.toml $(LOCK) | $(UV)
	$(INSTALL) -e '.[all]'
	touch $@

$(VENV)/.dev: pyproject.toml $(LOCK) $(VENV)/.all
	$(INSTALL) -e '.[all,dev]'
	touch $@

$(VENV)/.distributed: pyproject.toml $(LOCK) $(VENV)/.dev
	$(INSTALL) -e '.[all,dev,distributed]'
	touch $@

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info .venv-latest $(CONSUMERS)

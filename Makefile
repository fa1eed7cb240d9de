# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= artifacts
MODELS := runtime/models

.PHONY: demo test test-distributed bench-distributed data train export bench models clean arm64-check compare serve bench-serve own-classes

## demo: set up, train float + QAT, export every format, parity gate, results table
demo: $(VENV)/.all data train export bench
	$(BIN)/python -m export.results $(OUT)

## test: the test suite (uses the bundled models and small training runs)
test: $(VENV)/.dev data
	$(BIN)/python -m pytest -q

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
	$(BIN)/python benchmarks/keras_latency.py --models $(OUT) --out $(OUT)/bench.json --keras-model $(OUT)/float_model.h5

## serve: the web page and HTTP API on http://127.0.0.1:8000/ (bundled int8 model)
serve: $(VENV)/.all
	$(BIN)/python -m runtime.serve

## bench-serve: load test, our server against Flask + Keras in the same run (needs wrk)
bench-serve: $(VENV)/.dev data
	$(BIN)/python benchmarks/serve_load.py --keras-model $(OUT)/float_model.h5 --out $(OUT)/serve_load.json

## compare: every architecture trained alike, QAT, int8; table, Pareto plot (about 35 min)
compare: $(VENV)/.all data
	$(BIN)/python -m experiments.compare --out $(OUT)/compare

## own-classes: example folders (digits, faces, garment photos, a messy folder), each trained with
## the defaults, exported and scored through the Predictor on its held-out images (about 35 min)
own-classes: $(VENV)/.dev data
	$(BIN)/python benchmarks/example_folders.py $(OUT)/folders
	$(BIN)/python benchmarks/own_classes.py $(addprefix $(OUT)/folders/,digits faces garments messy) \
	  --out $(OUT)/own_classes

## models: reproduce the bundled pretrained models (and the test's golden file) from a demo run
models: demo
	cp $(OUT)/fashion_int8.tflite $(OUT)/fashion_int8.onnx $(OUT)/fashion_float.onnx $(MODELS)/
	cp $(OUT)/qat_test_predictions.npy $(OUT)/parity.json $(OUT)/train_report.json $(MODELS)/

## arm64-check: runtime tests, CLI and camera demo on emulated arm64 Debian bookworm (Raspberry Pi
## OS 64-bit), answers compared with x86; root; minutes (the rootfs is cached in ~/.cache/fashion-edge)
arm64-check: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[tflite,camera]'
	$(BIN)/python tools/arm64_check.py

# The official files: found locally, else Debian's package (as root), else the mirror.
data: $(VENV)/.all
	@$(BIN)/python -m train.data --no-download 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); } || true
	$(BIN)/python -m train.data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.all: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.all
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

$(VENV)/.distributed: pyproject.toml $(VENV)/.dev
	$(BIN)/python -m pip install -q -e '.[all,dev,distributed]'
	touch $@

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info

# Shotline: the two commands a newcomer types are `make demo` and `make test`;
# each creates .venv and installs what it needs when that is missing.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint model venv clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Shotline needs Python 3.11 or newer (python3.11, python3.12, ...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "could not create $(VENV): on Debian/Ubuntu install python3-venv (sudo apt install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/shotline demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python scripts/bench/run.py

# Retrain the classifier (needs the train extra, TensorFlow CPU, and the Debian
# packages hydrogen-drumkits and sonic-pi-samples); writes models/*.tflite,
# models/manifest.json and models/MODEL_CARD.md.
model: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[train]'
	$(BIN)/python -m shotline.models.training.train --seed 0

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

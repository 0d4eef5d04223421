# `make demo` and `make test` each build .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

# every extra (all: data, zoo, report, ray, text) and the test tools (dev): the suite and the
# demo use them all
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,all]'
	# torchvision for tests/user/test_torchvision_resnet18.py only, off sys.path (its CUDA
	# build's operators cannot load beside CPU torch); without it the test uses a re-expression
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/torchvision-0.28.0 \
		torchvision==0.28.0 || echo "torchvision 0.28.0 not installed"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/jacspec demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m ruff check jacspec tests benchmarks experiments
	$(BIN)/python -m pytest -q -x --durations=15

lint: $(STAMP)
	$(BIN)/python -m ruff check jacspec tests benchmarks experiments

clean:
	rm -rf $(VENV) demo_out .pytest_cache

# `make test` and `make demo` work on a fresh machine with only Python 3 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# TensorFlow CPU is the default backend; JAX and the torch CPU wheel let the suite check all three.
	# The exact builds are the suite's choice, named here: the extras only give ranges, for users.
	# torch==2.13.0 is the CPU build; any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q -e ".[jax,test]" tensorflow-cpu "torch==2.13.0"
	touch $(STAMP)

# Full suite on TensorFlow, then the backend-sensitive tests on JAX and PyTorch.
test: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q
	KERAS_BACKEND=jax $(PY) -m pytest -q -m backends
	KERAS_BACKEND=torch $(PY) -m pytest -q -m backends
	# As on CPUs where TensorFlow turns oneDNN off (then it cannot run channels_first convolutions): the
	# channels_first tests check keras-cam's one-line error instead.
	KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -q -m channels_first

test-fast: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(VENV)/bin/keras-cam demo --out demo_out

bench: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) benchmarks/bench_explainers.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo_out

# Entry points (see README): `make demo` runs the main job, `make demo-real` the English-Spanish
# benchmark, `make test` runs the tests.
# All create or reuse .venv; torch is installed only when none is importable, and then as the
# CPU build (torch==2.13.0) so the resolver never pulls CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_CPU_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: setup test demo demo-real clean

$(VENV)/.stamp-setup: pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_CPU_VERSION)"
	$(PY) -m pip install -q -e ".[dev,hf,logging,deepspeed]"
	@touch $@

setup: $(VENV)/.stamp-setup

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(PY) -m prealign_experiments.english_clone

# The English-Spanish benchmark; needs the Debian packages sword-text-kjv, sword-text-sparv and
# dict-freedict-eng-spa (its data is read from them at run time).
demo-real: setup
	$(PY) -m prealign_experiments.bible_pair

clean:
	rm -rf build *.egg-info megatron_prealign/_C*.so

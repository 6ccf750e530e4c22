# tlkit — two commands: `make lab` opens the course, `make test` runs every test.
# Each creates what it needs on first use: the virtual env (.venv) and the fused kernel build (.build/).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV_STAMP := $(VENV)/.tlkit-installed
LAB_PORT ?= 8888

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TLKIT_BUILD_DIR ?= $(CURDIR)/.build/ext
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: lab test test-portable test-lib test-lessons bench reproduce lesson-times book build doctor env clean

env: $(ENV_STAMP)

$(ENV_STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

build: env
	$(BIN)/python -m tlkit build

lab: build
	$(BIN)/python scripts/lab.py --port $(LAB_PORT)

test: build
	$(BIN)/python -m pytest tests -q
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider lessons/[0-9][0-9]_*.ipynb -q

# The lessons' checked outputs again on another floating-point path: MKL's AVX2 code path, ATen's AVX2 kernels and
# one thread instead of two. A checked output that changes here is not portable (see README, troubleshooting).
PORTABLE_ENV := MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
test-portable: build
	$(PORTABLE_ENV) $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider lessons/[0-9][0-9]_*.ipynb -q

test-lib: build
	$(BIN)/python -m pytest tests -q

test-lessons: build
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider lessons/[0-9][0-9]_*.ipynb -q

bench: build
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/bench.txt \
	  || echo "pykeops could not be installed here: bench_kernels.py skips its column"
	$(BIN)/python benchmarks/run_all.py

# tlkit's shallow methods on the vendored real benchmarks beside the published tables (add REPRODUCE_ARGS=--coral-5000
# for CORAL on the 5000-d Amazon pairs: two 5000x5000 eigendecompositions per pair).
reproduce: build
	$(BIN)/python benchmarks/reproduce.py $(REPRODUCE_ARGS)

lesson-times: build
	$(BIN)/python scripts/lesson_times.py

book: env
	$(BIN)/python scripts/make_book.py

doctor: build
	$(BIN)/python -m tlkit doctor

clean:
	rm -rf .build build .pytest_cache

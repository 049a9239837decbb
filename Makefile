# audioflow: `make demo` runs the job on embedded defaults, `make test` runs the suite.
# Both set up what they need on a fresh machine (venv, packages, ffmpeg, PostgreSQL).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# openai-whisper's metadata asks for triton (~1 GB, CUDA only) and an unpinned torch:
# install it without dependencies; pyproject.toml lists the ones it really needs.
OPENAI_WHISPER := openai-whisper==20250625

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP):
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Only ever torch 2.13.0 (a CPU build): an unpinned torch pulls several GB of CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(OPENAI_WHISPER)
	rm -f $(VENV)/.installed-*
	touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install the project with its dev tools

.PHONY: system-deps
system-deps: ## Install ffmpeg, espeak-ng and chromium (the docs' browser test) where missing
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: postgres
postgres: ## Make sure the local PostgreSQL answers (start it if it is down)
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	  pg_isready -h 127.0.0.1 -p 5432; }

.PHONY: lint
lint: $(STAMP) ## ruff, mypy and the import directions between packages (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

.PHONY: test
test: $(STAMP) system-deps postgres lint ## Lint, then the whole test suite (PostgreSQL, Prefect, ffmpeg, Whisper: all real)
	$(VENV)/bin/pytest

.PHONY: demo
demo: $(STAMP) system-deps ## Process the bundled sample episode on embedded defaults and print the result
	DO_NOT_TRACK=1 $(VENV)/bin/audioflow demo

.PHONY: up
up: $(STAMP) system-deps ## The whole embedded stack in the foreground (API, Prefect server and UI, worker)
	DO_NOT_TRACK=1 $(VENV)/bin/audioflow up

.PHONY: bench
bench: $(STAMP) system-deps postgres ## Benchmarks; BENCH_QUICK=1 for the short version
	$(PY) -m bench

.PHONY: clean
clean: ## Remove the embedded stack's data folder (.audioflow)
	rm -rf .audioflow

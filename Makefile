# vlmagent: `make demo` and `make test` install everything they need first (scripts/setup.sh).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python
# .venv is this checkout's own small venv over the cached one (scripts/setup.sh): it imports THIS
# checkout's code, however many checkouts share the cached packages.
# Nothing may be downloaded at run time: models and datasets are built or shipped locally.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# -n auto --dist loadfile: one worker per core, each test file on one worker (module fixtures such
# as a browser or a tiny model are made once per file)
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider -n auto --dist loadfile
# pytest exit 5 means "no tests collected": the suite must never be empty, so that is a failure.
define run_pytest
	@set +e; $(PYTEST) $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make: pytest collected no tests (exit 5); the suite must never be empty" >&2; exit 1; \
	fi; exit $$rc
endef

.PHONY: help setup demo test test-fast lint bench clean

help:
	@echo "make demo       install, score the example sites and model responses, train a tiny zoom agent, a tiny web agent and a tiny driving agent"
	@echo "make test       install, then run the whole test suite"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make lint       ruff check"
	@echo "make bench      run every benchmarks/*.py"
	@echo "make setup      only install (apt packages, cached venv, this checkout's .venv)"
	@echo "make clean      remove outputs and caches in this checkout (not the cached venv)"

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/vlmagent score data/sites --out out/demo/results.jsonl --report out/demo/report.html
	$(VENV)/bin/vlmagent score --from-responses data/responses/vite-react.jsonl --scaffold vite-react \
		--out out/demo/responses.jsonl --report out/demo/responses.html
	@test -f out/demo/tiny/config.json || $(VENV)/bin/vlmagent tiny --out out/demo/tiny
	$(VENV)/bin/vlmagent rollout configs/zoomqa_rollout.yaml --n 6 --out out/demo/traj.jsonl \
		--policy expert policy.path=out/demo/tiny domain.data_dir=out/demo/data
	$(VENV)/bin/vlmagent train configs/zoomqa_cascade_short.yaml policy.path=out/demo/tiny \
		train.output_dir=out/demo/cascade domain.data_dir=out/demo/data
	@test -f out/demo/tiny-web/config.json || $(VENV)/bin/vlmagent tiny --out out/demo/tiny-web --corpus web
	$(VENV)/bin/vlmagent train configs/webgen_tiny_short.yaml policy.path=out/demo/tiny-web \
		train.output_dir=out/demo/webgen domain.data_dir=out/demo/data
	$(VENV)/bin/vlmagent drive make-data --out out/demo/nusc --scenes 12 --size 320 180 --workers 2 -q
	$(VENV)/bin/vlmagent rollout configs/drive_rollout.yaml --n 4 --out out/demo/drive_traj.jsonl \
		--policy expert policy.path=out/demo/tiny domain.dataroot=out/demo/nusc \
		domain.data_dir=out/demo/data agent.tools_in_prompt=false
	$(VENV)/bin/vlmagent train configs/drive_cascade_short.yaml policy.path=out/demo/tiny \
		domain.dataroot=out/demo/nusc train.output_dir=out/demo/drive domain.data_dir=out/demo/data
	@echo "demo: website scores in $(CURDIR)/out/demo/results.jsonl"
	@echo "demo: report         in $(CURDIR)/out/demo/report.html (model responses: responses.html)"
	@echo "demo: trajectories   in $(CURDIR)/out/demo/traj.jsonl (images in out/demo/traj.images/)"
	@echo "demo: training curve in $(CURDIR)/out/demo/cascade/<stage>/eval.json"
	@echo "demo: web generation in $(CURDIR)/out/demo/webgen/<stage>/eval.json (projects: responses-static.jsonl)"
	@echo "demo: driving        in $(CURDIR)/out/demo/drive/<stage>/eval.json (nuScenes-format data: out/demo/nusc;"
	@echo "                        expert episodes with tool images for vlmagent debug: out/demo/drive_traj.jsonl)"
	@if [ -n "$$DISPLAY" ] && command -v xdg-open >/dev/null; then xdg-open out/demo/report.html; fi

test: setup
	$(call run_pytest,)

test-fast: setup
	$(call run_pytest,-m "not slow")

lint: setup
	$(VENV)/bin/ruff check $(wildcard vlmagent tests benchmarks)

bench: setup
	@shopt -s nullglob; files=(benchmarks/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "bench: no benchmarks/*.py yet"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PYTHON) "$$f" || exit 1; done

clean:
	rm -rf out build .pytest_cache .ruff_cache *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	@if [ -L $(VENV) ] || [ -f $(VENV)/.vlmagent-overlay ]; then rm -rf $(VENV); \
		echo "removed $(VENV) (the cached venv stays)"; fi

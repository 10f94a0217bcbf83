# Two commands set everything up on a fresh machine:
#   make demo   the end-to-end ML demo on the embedded default (no services)
#   make test   the whole test suite, with the real services it needs
# `make bench` runs the benchmarks against their peers (cp, git, DVC, boto3).

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv services test demo bench screenshots clean

venv: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml
	bash tests/services/venv.sh $(VENV)
	touch $@

# Debian packages (bubblewrap, docker.io) and the S3 server binary; needs root
# on a fresh machine, skipped where already present.
services: venv
	bash tests/services/install.sh $(VENV)

test: services
	$(VENV)/bin/pytest -q -ra --durations=25 $(PYTEST_ARGS)

demo: venv
	$(PY) demo/run_demo.py

bench: services
	$(PY) bench/run.py $(BENCH_ARGS)

# The README's pictures of the console (docs/console-{dag,job,lineage}.png):
# the browser tests walk the demo's store and keep these three views.
screenshots: venv
	shots=$$(mktemp -d) && DPL_CONSOLE_SCREENSHOTS=$$shots $(VENV)/bin/pytest -q tests/test_console.py -k demo \
	  && mkdir -p docs && cp $$shots/console-dag.png $$shots/console-job.png $$shots/console-lineage.png docs/ && rm -rf $$shots

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis bench/data bench/out demo/out

# The two set-up commands of the README. CI (.ci/run) runs exactly these.
PYTHON ?= python3

.PHONY: install test bench

install:  ## install agentkit, its bundled model and the test tools into the current Python
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## run the whole test suite (exit status 5, "no tests collected", counts as a failure)
	$(PYTHON) -m pytest

bench:  ## print the benchmark tables (not part of the tests)
	$(PYTHON) bench/startup.py
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/stream_throughput.py
	$(PYTHON) bench/embedded_store.py

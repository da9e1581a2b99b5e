# The two set-up commands of the README. CI (.ci/run) runs exactly these.
PYTHON ?= python3
DICT_PACKAGES := dictd dict-wn dict-gcide dict-foldoc

.PHONY: install test bench

install:  ## a real DICT server and dictionaries for the tests (Debian), then agentkit, its plugins under plugins/ and its test tools
	@if dpkg -s $(DICT_PACKAGES) >/dev/null 2>&1; then \
	  echo "dictd and dictionaries: already installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DICT_PACKAGES); \
	else \
	  echo "note: install $(DICT_PACKAGES) with your package manager (as root) to run the dictionary tests; they skip otherwise"; \
	fi
	$(PYTHON) -m pip install -e ".[dev]" $(foreach p,$(sort $(dir $(wildcard plugins/*/pyproject.toml))),-e $(p))

test:  ## run the whole test suite (exit status 5, "no tests collected", counts as a failure)
	$(PYTHON) -m pytest

bench:  ## print the benchmark tables (not part of the tests)
	$(PYTHON) bench/startup.py
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/stream_throughput.py
	$(PYTHON) bench/embedded_store.py
	$(PYTHON) bench/hybrid_retrieval.py
	$(PYTHON) bench/frameworks.py
	$(PYTHON) bench/server.py

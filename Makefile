# The two set-up commands of the README. CI (.ci/run) runs exactly these.
PYTHON ?= python3
DICT_PACKAGES := dictd dict-wn dict-gcide dict-foldoc
# The browser tests/test_web.py drives through Playwright (which downloads no browser of its own here).
BROWSER_PACKAGES := chromium
# CPU build of PyTorch for the tune/gpu extras' tests (this version is on the CI machines' disk).
TORCH ?= torch==2.13.0
# Compiler flags for a llama.cpp build without AMX tiles, which some VMs and sandboxes do not enable
# (used unless CMAKE_ARGS is set; see also the check in `install`).
LLAMA_NO_AMX := -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

.PHONY: install test bench

install:  ## a real DICT server, dictionaries and chromium for the tests (Debian), then agentkit, its plugins under plugins/ and its test tools
	@if dpkg -s $(DICT_PACKAGES) $(BROWSER_PACKAGES) >/dev/null 2>&1; then \
	  echo "dictd, dictionaries and chromium: already installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DICT_PACKAGES) $(BROWSER_PACKAGES); \
	else \
	  echo "note: install $(DICT_PACKAGES) $(BROWSER_PACKAGES) with your package manager (as root) to run the dictionary and browser tests; they skip otherwise"; \
	fi
	@# torch before the rest: a plain `pip install torch` (or transformers/peft asking for it) pulls a
	@# multi-GB CUDA build; an existing torch is kept. Override with e.g. make install TORCH="torch==2.5.1".
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then echo "torch: already installed"; \
	else $(PYTHON) -m pip install "$(TORCH)"; fi
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_NO_AMX)}" $(PYTHON) -m pip install -e ".[dev]" $(foreach p,$(sort $(dir $(wildcard plugins/*/pyproject.toml))),-e $(p))
	@# llama-cpp-python compiles for this CPU; on CPUs with AMX the build uses AMX tiles, which some VMs and
	@# sandboxes do not enable (the first matrix product dies with SIGSEGV). Check, and rebuild without AMX.
	@if $(PYTHON) -m agentkit.llm.llama_cpp; then :; else \
	  echo "rebuilding llama-cpp-python without AMX (a few minutes)"; \
	  CMAKE_ARGS="$(LLAMA_NO_AMX)" $(PYTHON) -m pip install --no-cache-dir --force-reinstall --no-deps \
	    "llama-cpp-python==$$($(PYTHON) -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')" \
	  && $(PYTHON) -m agentkit.llm.llama_cpp; fi

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
	$(PYTHON) bench/adapters.py
	$(PYTHON) bench/reader.py
	$(PYTHON) bench/focus.py
	$(PYTHON) bench/definitions.py

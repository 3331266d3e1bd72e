# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,gameprogress]'
	touch $(STAMP)

# For the local demo only (the server listens on 127.0.0.1): production sets its own secret.
ADMIN_TOKEN ?= local-demo-admin-token

run: $(STAMP)
	mkdir -p var
	$(BIN)/gameprogress seed-demo --if-empty
	@echo "dashboard: http://127.0.0.1:8000/dashboard (admin token: $(ADMIN_TOKEN))"
	GAMEPROGRESS_ADMIN_TOKEN='$(ADMIN_TOKEN)' \
		$(BIN)/forklift --http 127.0.0.1:8000 --processes 2 --threads 1 gameprogress.wsgi:app

test: $(STAMP)
	$(BIN)/python tests/system_tools.py ensure
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# Coverage-guided fuzzing (atheris) of the HTTP/1.1 parser, the uwsgi decoder and the ini
# reader, FUZZ_SECONDS in all, split across them; not part of `make test`. See fuzz/run.py.
FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[fuzz]'
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

fmt: $(STAMP)
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) build src/*.egg-info

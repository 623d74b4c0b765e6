# One entry point. A fresh machine needs only: make demo (the main job end to end) and make test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo
# The demo runs on the embedded defaults; its own data folder keeps it apart from anything else.
DEMO_ENV := SKINSERVE_DATA_DIR=$(DEMO_DIR) SKINSERVE_DATABASE_URL= SKINSERVE_STORAGE_URL=

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(DEMO_ENV) $(BIN)/skinserve data synth --out $(DEMO_DIR)/shine --per-class 5 --size 128 --seed 0
	$(DEMO_ENV) $(BIN)/skinserve db upgrade
	$(DEMO_ENV) $(BIN)/skinserve data ingest $(DEMO_DIR)/shine --source synthetic
	$(DEMO_ENV) $(BIN)/skinserve data split $(DEMO_DIR)/shine --out $(DEMO_DIR)/split.json
	$(DEMO_ENV) $(BIN)/skinserve data summary

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data/demo .pytest_cache

# The two commands of the README, plus helpers. PY is the interpreter that gets the requirements.
PY  ?= python3
LAB ?= inventories/default
DEPS := .pacslab/.deps-installed

.PHONY: up test lint unit verify down status doctor docs bench

$(DEPS): requirements.txt pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@mkdir -p .pacslab && touch $@

## make up: bring the reference lab up (installs the Python requirements; pacslab up installs
## Debian's docker.io and starts dockerd when no engine answers and you are root)
up: $(DEPS)
	$(PY) -m pacslab.cli up --lab $(LAB)

## make test: lint, unit tests, then the integration suite on a lab it brings up, then the report
test: lint
	$(PY) -m pytest tests/unit
	$(PY) -m pacslab.cli verify --lab $(LAB)

lint: $(DEPS)
	$(PY) -m ruff check pacslab infra tests bench plugins
	$(PY) -m mypy

unit: $(DEPS)
	$(PY) -m pytest tests/unit

down: $(DEPS)
	$(PY) -m pacslab.cli down --lab $(LAB)

status doctor: $(DEPS)
	$(PY) -m pacslab.cli $@ $(if $(filter status,$@),--lab $(LAB))

docs: $(DEPS)
	$(PY) -m pacslab.docs

bench: $(DEPS)
	$(PY) bench/deploy.py --lab $(LAB)

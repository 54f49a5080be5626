# The two commands of the README, plus helpers. Everything runs in a virtual environment (.venv)
# made from the machine's python3: Debian's own python3 is externally managed (PEP 668) and has no
# pip, so nothing is ever installed into it. SYSPY makes the venv; PY is the venv's interpreter.
SYSPY ?= python3
VENV  ?= .venv
PY    := $(VENV)/bin/python
LAB   ?= inventories/default
DEPS  := $(VENV)/.deps-installed
# Python keeps what it compiled (__pycache__) even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): every ansible-playbook, pytest and pacslab process imports hundreds of
# modules, and compiling them again each time cost a warm `up` about a second of CPU and loading a
# lab definition 1.1 s of its 1.6 s. __pycache__ is ignored by git and by the plan's digests.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: up test lint unit verify down status doctor docs bench venv fresh-check

venv: $(DEPS)
	@echo "$(VENV): $$($(PY) --version), requirements.txt installed"

# A venv needs Debian's python3-venv (ensurepip); install it through apt when it is missing.
$(PY):
	@command -v $(SYSPY) >/dev/null 2>&1 || { echo "make: no $(SYSPY); as root: apt-get install python3" >&2; exit 4; }
	@$(SYSPY) -m venv $(VENV) >/dev/null 2>&1 || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: $(SYSPY) cannot make a virtual environment; installing Debian's python3-venv"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "make: $(SYSPY) cannot make a virtual environment; as root: apt-get install python3-venv" >&2; exit 4; fi; \
	  $(SYSPY) -m venv $(VENV); }

# --no-compile: pip would byte-compile every module of the ansible package's 470 MB of collections
# (about 20 s of a fresh install); Python compiles the few that run when they are first imported
# (and keeps them: unexport above).
$(DEPS): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	@touch $@

## make up: bring the reference lab up (makes .venv with the Python requirements; pacslab up
## installs Debian's docker.io and starts dockerd when no engine answers and you are root)
up: $(DEPS)
	$(PY) -m pacslab.cli up --lab $(LAB)

## make test: lint, unit tests, then every integration check (steady and lifecycle: its first
## checks take the lab down and bring it up cold, its last takes it down), then the report, then
## the fresh-machine check (it needs the root filesystem image that up builds, which down keeps).
## The lab is left down.
# Lint and the unit suite run side by side, each one's output kept in one piece (2 cores, the unit suite on both: about 75 s).
test: $(DEPS)
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint unit
	$(PY) -m pacslab.cli verify --lifecycle --lab $(LAB)
	$(PY) tests/fresh/fresh_check.py

## make verify: the steady checks only (they observe a running lab and change nothing)
verify: $(DEPS)
	$(PY) -m pacslab.cli verify --lab $(LAB)

# yamllint reads .yamllint, ansible-lint .ansible-lint (production profile, offline): each lists
# what it leaves out and why. Both walk the whole repository (roles, playbooks, lab folders);
# ansible-lint runs the venv's ansible tools, so the venv's bin comes first on its PATH.
lint: $(DEPS)
	$(PY) -m ruff check pacslab infra tests bench plugins scenarios roles
	$(PY) -m mypy
	$(VENV)/bin/yamllint --strict .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/ansible-lint

unit: $(DEPS)
	$(PY) -m pytest -n auto tests/unit

down: $(DEPS)
	$(PY) -m pacslab.cli down --lab $(LAB)

status: $(DEPS)
	$(PY) -m pacslab.cli status --lab $(LAB)

doctor: $(DEPS)
	$(PY) -m pacslab.cli doctor

docs: $(DEPS)
	$(PY) -m pacslab.docs

bench: $(DEPS)
	$(PY) bench/deploy.py --lab $(LAB)

## make fresh-check: the README's install path on a fresh Debian 12: a throw-away container from the
## lab's own bookworm root filesystem (made by `make up`) installs Debian's python3 and make, runs
## `make doctor` there and checks the venv, every import and `pacslab doctor` (tests/fresh/)
fresh-check: $(DEPS)
	$(PY) tests/fresh/fresh_check.py

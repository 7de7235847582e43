# Bootstraps a virtualenv from nothing (python3 with venv and pip is all it needs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test typecheck bench clean

# pip's chatter goes to $(VENV)/install.log, shown only when the install fails.
$(BIN)/invoicesync: pyproject.toml
	@echo "Installing invoicesync and its dependencies into $(VENV) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(BIN)/python -m pip install -e '.[dev]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $@

install: $(BIN)/invoicesync

## demo: plan and apply specs/ against the embedded sandbox (no account, no key)
demo: install
	$(BIN)/invoicesync plan
	$(BIN)/invoicesync apply --auto-approve

## test: the whole test suite (type check first: mypy strict over the package)
test: install
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

typecheck: install
	$(BIN)/python -m mypy

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) state/*.json state/*.journal state/*.lock state/*.backup

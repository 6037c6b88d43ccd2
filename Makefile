# Two commands for a newcomer: `make demo` and `make test`. Each sets up its own virtual env.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  := build
# The CPU build of torch that lies on this kind of machine's disk; a CUDA build works as well.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[cpu,export,dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

test: lint typecheck
	$(PY) -m pytest -q

demo: $(STAMP)
	mkdir -p $(BUILD)
	$(VENV)/bin/edge-export --random-init --preset tiny --out $(BUILD)/demo.plan
	$(VENV)/bin/edge-run --engine $(BUILD)/demo.plan --inspect
	@echo
	@echo "demo: this bundle holds UNTRAINED (random-init) weights: it proves export, parity and the"
	@echo "      bundle checks. Training the demo model and running edge-run on a video are not in"
	@echo "      this version yet (see README 'Status')."

clean:
	rm -rf $(VENV) $(BUILD)

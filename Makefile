# Two commands: `make lab` (set up and open JupyterLab) and `make test` (set up and check everything).
# Re-running is fast: the venv is reinstalled only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch: the CPU build pinned for this course's reference machine. A GPU / Apple-silicon user either
# installs their torch into .venv first and runs `make lab TORCH=`, or passes their own spec (README).
TORCH ?= torch==2.13.0
NB ?= notebooks/*.ipynb
JUPYTER_FLAGS := $(if $(DISPLAY)$(filter Darwin,$(shell uname -s)),,--no-browser) $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup data student lab teacher test unit nbval notebooks lint bench map clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH)" ] && ! $(PY) -c "import torch" 2>/dev/null; then $(PY) -m pip install -q $(TORCH); fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

data: $(STAMP)
	@$(PY) -m lessons_lib.data
	@$(PY) -m lessons_lib.native

# The learner's edition (solutions replaced by stubs) in learner/; a notebook you changed there is never overwritten
student: $(STAMP)
	@$(PY) -m lessons_lib.editions notebooks learner

lab: data student
	$(VENV)/bin/jupyter lab learner/ $(JUPYTER_FLAGS)

# The teacher's edition: worked solutions, executed outputs
teacher: data
	$(VENV)/bin/jupyter lab notebooks/ $(JUPYTER_FLAGS)

unit: data
	$(PY) -m pytest tests -q -m "not notebook"

nbval: data
	$(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NB)

test: data lint
	$(PY) -m pytest -q tests --nbval-lax --nbval-current-env -p no:cacheprovider $(NB)

lint: $(STAMP)
	$(VENV)/bin/ruff check lessons_lib tests benchmarks

# Re-execute notebooks in place (outputs committed so they read on GitHub): `make notebooks NB=notebooks/02*.ipynb`
notebooks: data
	@for nb in $(NB); do echo "executing $$nb"; \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
	    --ExecutePreprocessor.store_widget_state=True "$$nb" || exit 1; done

# The course map (notebooks/README.md) from the executed notebooks; `make bench` first refreshes run times
map: $(STAMP)
	$(PY) -m lessons_lib.course_map

bench: data
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data/*.npz data/*.sha256

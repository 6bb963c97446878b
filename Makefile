# Two commands on a fresh machine: `make demo` and `make test` (each sets everything up).
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; this machine has it on local disk. Elsewhere override, e.g.
# make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_RUN ?= runs/demo

.PHONY: demo test venv venv-core data lint clean bench-families-deps bench-families

# The demo needs vaekit and its core dependencies; the tests add the [dev] tools.
$(VENV)/.core-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

# torch-fidelity (the Inception network of FID) goes beside the venv's packages, not among
# them, and without its torchvision (which does not import beside the CPU torch): installed,
# it would make every `import torchmetrics` import it. tests/test_inception_fid.py runs vaekit
# with it on the path, as a user who ran `pip install --no-deps torch-fidelity` has it.
FIDELITY_DIR := $(VENV)/extras/torch-fidelity
$(VENV)/.fidelity-stamp: | $(VENV)/.core-stamp
	$(PIP) install -q --no-deps --upgrade --target $(FIDELITY_DIR) "torch-fidelity==0.4.0"
	touch $@

$(VENV)/.deps-stamp: $(VENV)/.core-stamp
	$(PIP) install -q -e ".[dev]"
	touch $@

# The editable install records this checkout's path; re-point it when the venv is shared.
REPOINT = @$(PY) -c "import vaekit, pathlib, sys; sys.exit(pathlib.Path(vaekit.__file__).resolve().is_relative_to(pathlib.Path('src').resolve()) is False)" 2>/dev/null \
		|| $(PIP) install -q --no-deps --no-build-isolation -e .

venv-core: $(VENV)/.core-stamp
	$(REPOINT)

venv: $(VENV)/.deps-stamp $(VENV)/.fidelity-stamp
	$(REPOINT)

data: venv-core
	@$(VENV)/bin/vaekit data fetch fashion-mnist --no-download 2>/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		     && { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
		          || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; }; } \
		|| true
	$(VENV)/bin/vaekit data fetch fashion-mnist

demo: data
	$(VENV)/bin/vaekit train --config fashion-mlp --out $(DEMO_RUN) --overwrite
	$(VENV)/bin/vaekit evaluate $(DEMO_RUN)
	@echo "demo run: $(DEMO_RUN) (samples.png, reconstructions.png, metrics.jsonl, model.safetensors)"
	$(VENV)/bin/vaekit report $(DEMO_RUN)
	@echo "report: $(DEMO_RUN)/report.html (open it in a browser); latent explorer: $(VENV)/bin/vaekit explore $(DEMO_RUN)"

# The quality gates first (seconds), then the suite: lint, formatting, types (mypy on src/).
# The suite runs in one pytest-xdist worker per core (PYTEST_WORKERS=0 runs it in this process).
PYTEST_WORKERS ?= auto
test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples
	$(VENV)/bin/mypy

# benchmarks/families.py: vaekit's model families against pythae's. pythae is no vaekit
# dependency: it goes into benchmarks/.pythae (gitignored) with --no-deps, beside the venv's
# torch (make venv-core first; VENV=... names a venv of your own, which is not touched).
PYTHAE_DIR := benchmarks/.pythae
$(PYTHAE_DIR)/.stamp: benchmarks/requirements-pythae.txt
	@test -x $(PY) || { echo "no $(PY): run make venv-core first, or pass VENV=PATH"; exit 1; }
	$(PIP) install -q --no-deps --target $(PYTHAE_DIR) -r benchmarks/requirements-pythae.txt
	touch $@

bench-families-deps: $(PYTHAE_DIR)/.stamp

FAMILIES ?= all
bench-families: bench-families-deps
	OMP_NUM_THREADS=1 nice $(PY) benchmarks/families.py --families $(FAMILIES)

clean:
	rm -rf $(VENV) build dist src/*.egg-info

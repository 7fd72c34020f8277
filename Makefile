# The two commands the README promises: `make demo` and `make test`.
# Both build a private virtual environment in .venv first, so a fresh machine needs
# nothing but Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build is enough for the built-in default; see the README for a CUDA build.
TORCH  ?= torch==2.13.0
EXAMPLE ?= examples/duck.png

.PHONY: demo test venv wheels extension bench clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/blend123 convert $(EXAMPLE) -o out/demo.glb

# The wheels the Blender extension bundles (pyzmq, msgpack), downloaded once into build/wheels.
wheels: venv
	$(BIN)/python packaging/wheels.py > /dev/null

# One validated extension zip per platform, in dist/.
extension: wheels
	$(BIN)/python packaging/build_extension.py --out dist

# A run that collects no test fails (pytest exits 5): a broken collection must not pass.
test: venv wheels
	$(BIN)/python -m pytest -q -ra

bench: venv
	$(BIN)/python benchmarks/bench_transport.py
	$(BIN)/python benchmarks/bench_proxy.py
	$(BIN)/python benchmarks/bench_reconstruction.py
	$(BIN)/python benchmarks/bench_blender_import.py

clean:
	rm -rf $(VENV) out

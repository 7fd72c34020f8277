# The two commands the README promises: `make demo` and `make test`.
# Both build a private virtual environment in .venv first, so a fresh machine needs
# nothing but Python 3.11+ and make. `make demo` installs the runtime only; `make test`
# (and `make venv`) add the test extras on top: pytest and bpy, the real Blender (~0.8 GB).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Which PyTorch build. By default the one PyPI serves for this platform: on Linux x86-64
# that is the CUDA build (it pulls the nvidia-* and triton wheels, several GB), on macOS
# and Windows the CPU build. TORCH_INDEX takes it from PyTorch's own index instead:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu     # CPU build, smallest
#   make venv TORCH_INDEX=https://download.pytorch.org/whl/cu128   # CUDA 12.8 build
# (`blend123 doctor` names the CUDA build that fits the driver). Changing it later: `make clean` first.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_PIP_ARGS = $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
EXAMPLE ?= examples/duck.png

.PHONY: demo test venv runtime wheels extension bench gpu-check clean

# The runtime: torch first (from TORCH_INDEX when given), then the package; pip keeps that
# torch, since it satisfies the package's requirement.
$(BIN)/.runtime: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -e .
	touch $@

# The test extras on top of the runtime.
$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

runtime: $(BIN)/.runtime

venv: $(BIN)/.installed

demo: runtime
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

# Everything that needs an NVIDIA GPU, in one run (< 8 min): needs a CUDA build of torch.
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) out

# Two commands for a newcomer: `make demo` and `make test`. Each sets up its own virtual env.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  := build
# The CPU build of torch that lies on this kind of machine's disk; a CUDA build works as well.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint typecheck clean native

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=68"
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[cpu,export,dev,tune,openvino]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# NVIDIA's TensorRT stubs check the TensorRT code without TensorRT. They must be installed with
# --no-deps (their dependencies are uninstallable TensorRT wheels) and two syntax errors fixed;
# then they are removed from site-packages so `import tensorrt` still fails honestly at run time.
TRT_STUBS := $(BUILD)/trt-stubs/tensorrt_bindings/tensorrt.pyi
$(TRT_STUBS): | $(STAMP)
	$(PY) -m pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
	rm -rf $(BUILD)/trt-stubs && mkdir -p $(BUILD)/trt-stubs
	SP=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  cp -r $$SP/tensorrt $$SP/tensorrt_bindings $(BUILD)/trt-stubs/
	sed -i -E 's/([(,] *)in: /\1in_: /g' $(TRT_STUBS)
	sed -i -E 's/, channel_axis: int\)/, channel_axis: int = ...)/' $(TRT_STUBS)
	$(PY) -m pip uninstall -q -y tensorrt-stubs

# mypy sees the checkout as the package `h2a` (a link in build/mypy-root), as the installed
# package maps it; checked as plain folders, every `from h2a...` import would be Any to mypy.
typecheck: $(STAMP) $(TRT_STUBS)
	mkdir -p $(BUILD)/mypy-root && ln -sfn "$(CURDIR)" $(BUILD)/mypy-root/h2a
	cd $(BUILD)/mypy-root && MYPYPATH="$(CURDIR)/$(BUILD)/mypy-root:$(CURDIR)/$(BUILD)/trt-stubs" \
	  "$(CURDIR)/$(VENV)/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" --explicit-package-bases h2a
	@echo "TensorRT code checked against tensorrt-stubs 10.13 (targets TensorRT 10.3 / JetPack 6)"

# The CUDA pre-processing library (cmake/): built wherever nvcc is, GPU or not; its tests then check
# the library's CPU side here, and its kernels where a GPU is (tests marked `gpu`).
NVCC := $(shell command -v nvcc 2>/dev/null)
NINJA := $(shell command -v ninja 2>/dev/null)
native:
	@command -v nvcc >/dev/null || { echo "make native: nvcc (the CUDA toolkit) is not installed"; exit 1; }
	cmake -S cmake -B $(BUILD)/native $(if $(NINJA),-G Ninja) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD)/native

test: lint typecheck $(if $(NVCC),native)
	$(PY) -m pytest -q

# Generates data, trains the tiny model (cached in build/demo; README gives measured times), evaluates,
# exports, quantizes to INT8 behind the accuracy gate, renders videos and runs edge-run on them.
demo: $(STAMP)
	$(PY) -m h2a.export_tools.demo --out $(BUILD)/demo --bundle $(BUILD)/demo.plan

clean:
	rm -rf $(VENV) $(BUILD)

# make run    the whole pipeline on the default preset (gpu on CUDA, else cpu)
# make smoke  the whole pipeline on the smoke preset (a few minutes on a laptop CPU)
# make test   the test suite (CPU only, a few minutes)
# make bench  generation speed: KV cache against the naive path and transformers
# make gpu-check  on a CUDA machine with torch installed: the CUDA tests, the GPU benchmark and
#                 the gpu preset for the rest of 10 minutes (tools/gpu_check.sh; CONTINUE=1 finishes it)
# Each target creates the virtual environment in .venv from requirements.txt when it is missing.

VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/run

.PHONY: run smoke test bench gpu-check clean

$(VENV)/installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

run: $(VENV)/installed
	$(PY) train_all.py --out-dir $(OUT)

smoke: $(VENV)/installed
	$(PY) train_all.py --preset smoke --out-dir out/smoke

test: $(VENV)/installed
	$(PY) -m pytest -q tests

bench: $(VENV)/installed
	$(PY) tools/bench.py

gpu-check:
	bash tools/gpu_check.sh

clean:
	rm -rf $(VENV) out

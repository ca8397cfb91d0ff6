# Two entry points that work on a fresh machine: `make run` (the main job, small) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.augkd-installed
OUT    ?= data/d1M-demo

.PHONY: install run test bench clean

install: $(STAMP)

# torch first, from the local CPU wheel: anything that pulls torch in before would fetch GBs of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,sevennet]"
	touch $(STAMP)

run: install
	$(VENV)/bin/augkd generate d1M --systems 4 --max-atoms 60 --steps 50 --shards 2 --workers 2 --out $(OUT)
	$(VENV)/bin/augkd info $(OUT)

# The distributed tests run against a real single-node SLURM, and the import tests read a real GPAW calculation
# (Debian's gpaw, for the system python3): both installed here when we are root with apt-get (as in CI); elsewhere
# those tests skip and say why.
test: install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash scripts/slurm-dev.sh start; \
	else echo "make test: not root or no apt-get, SLURM tests will be skipped"; fi
	@bash scripts/gpaw-dev.sh || echo "make test: no GPAW (Debian gpaw), the real-DFT import test will be skipped"
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/io_throughput.py
	$(PY) bench/dask_scaling.py

clean:
	rm -rf $(VENV) data

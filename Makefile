# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NATIVE := $(wildcard native/*.pyx native/*.pxd native/*.pxi)
PROTOS := $(wildcard proto/edgekv/v1/*.proto)
PYTEST_ARGS ?=
# make test runs the suite on two pytest-xdist workers, a test file per worker at a time
# (module fixtures start one cluster), longest files first (tests/conftest.py; without
# --no-loadscope-reorder xdist would order files by their number of tests);
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

.PHONY: build run test test-unit test-integration test-purepython torture lint fmt unasync proto bench bench-peers bench-compare debug clean js example

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "Cython>=3.0,<4" "grpcio-tools>=1.60" "protoc-gen-connectrpc==0.13.0"
	$(PY) -m pip install --quiet --no-build-isolation -e '.[test]'
	touch $(STAMP)

# Rebuild the extension and the generated gRPC code whenever their sources change.
edgekv/.built: $(STAMP) $(NATIVE) $(PROTOS) setup.py
	$(PY) setup.py --quiet build_ext --inplace
	$(PY) -c "import edgekv.native as n; assert n.ACTIVE == 'cython', n.ACTIVE; print('edgekv: compiled read path active')"
	touch $@

build: edgekv/.built

proto: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

# FRESH=1 deletes the nodes' data (deploy/local/data/<node>) first.
run: build
	$(VENV)/bin/edgekv cluster up --config deploy/local/cluster.yaml --wan --demo $(if $(FRESH),--fresh)

# The JavaScript side (needs node and npm): npm ci from package-lock.json, the ES
# client generated from proto/ into js/gen/, the examples bundled. Stamped: fast when done.
js: build
	PY=$(PY) scripts/npm_setup.sh

# The edge-function example in workerd against `make run`'s cluster (start that first).
example: js
	$(PY) scripts/edge_example.py $(if $(POP),--node $(POP))

# scripts/torture_deps.sh: nftables for the real partitions of tests/torture (as root;
# elsewhere those tests fall back to the fault proxies or skip, saying why).
test: build
	scripts/torture_deps.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: build
	$(PY) -m pytest tests/unit tests/parity tests/property $(PYTEST_ARGS)

test-integration: build
	$(PY) -m pytest tests/inprocess tests/integration tests/torture $(PYTEST_ARGS)

test-purepython: build
	EDGEKV_PUREPYTHON=1 $(PY) -m pytest tests/unit tests/parity tests/property tests/inprocess $(PYTEST_ARGS)

# The long torture run (tests/torture): SEEDS seeded runs (SEED, SEED+1, ...) share DURATION
# seconds; the report goes to the terminal and to TORTURE_REPORT. `make test` runs a quick one.
SEED ?= 1
SEEDS ?= 5
DURATION ?= 300
TORTURE_REPORT ?= torture-report.txt
# NETWORK: auto (real partitions: nftables between network namespaces, where root can make
# them; scripts/torture_deps.sh installs nft), netns, or proxy (the fault proxies).
NETWORK ?= auto
torture: build
	scripts/torture_deps.sh
	PYTHONPATH=tests $(PY) -m torture.run --seed $(SEED) --seeds $(SEEDS) --duration $(DURATION) --network $(NETWORK) --report $(TORTURE_REPORT)

lint: build
	$(VENV)/bin/ruff check edgekv tests bench scripts setup.py
	$(VENV)/bin/mypy
	$(VENV)/bin/cython-lint native

fmt: $(STAMP)
	$(VENV)/bin/ruff format edgekv tests bench scripts setup.py
	$(VENV)/bin/ruff check --fix edgekv tests bench scripts setup.py
	$(PY) scripts/unasync.py

# edgekv/client/sync.py (Client) and sync_reads.py are generated from edgekv/client/aio.py
# (AsyncClient) and aio_reads.py (its scan and watch).
unasync: $(STAMP)
	$(PY) scripts/unasync.py

# make bench ends with bench/compare (edgekv next to Redis, etcd and NATS; results and
# plots in bench/results/). It needs the `bench` extra (the peers' Python clients and
# matplotlib) and the peer servers, which scripts/bench_peers.sh installs from Debian's
# packages (as root; it only checks when they are there). COMPARE_ARGS passes options,
# e.g. COMPARE_ARGS="--keys 10000 --seconds 3".
BENCH_STAMP := $(VENV)/.bench-installed
COMPARE_ARGS ?=

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --no-build-isolation -e '.[test,bench]'
	touch $@

bench-peers:
	BENCH_PEERS_STAMP=$(VENV)/.bench-peers scripts/bench_peers.sh

bench-compare: build $(BENCH_STAMP) bench-peers
	$(PY) -m bench.compare $(COMPARE_ARGS)

bench: build
	$(PY) -m pytest bench/micro --benchmark-only --benchmark-columns=min,median,mean,max,rounds
	$(PY) -m bench.e2e.load
	$(MAKE) bench-compare

debug: $(STAMP)
	EDGEKV_DEBUG=1 $(PY) setup.py build_ext --inplace --force
	rm -f edgekv/.built

clean:
	rm -rf build dist *.egg-info edgekv/_speedups*.so native/*.c native/*.html edgekv/.built
	rm -rf js/gen examples/*/dist
	rm -f edgekv/v1/*_pb2*.py edgekv/v1/*_pb2*.pyi edgekv/v1/*_connect.py
	@echo "make clean removed build outputs; it keeps .venv, the nodes' data (deploy/local/data)"
	@echo "and their logs (deploy/local/run). Start clean with: make run FRESH=1"

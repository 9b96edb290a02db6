# The two commands of the README: `make run` and `make test`.
# Both install what they need with apt (as root) and build out of tree.

JOBS ?= $(shell nproc)
CONFIG ?= etc/natter.yaml
FUZZ_SECONDS ?= 60

.PHONY: all run test deps-build deps-test build build-asan build-fuzz \
	unit integration fuzz bench-smoke bench bench-directory bench-csi clean

all: build

deps-build:
	@scripts/install-deps.sh deps-build.txt

deps-test: deps-build
	@scripts/install-deps.sh deps-test.txt

build: deps-build
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j $(JOBS)

build-asan: deps-test
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNATTER_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

build-fuzz: deps-test
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DNATTER_SANITIZE=ON -DNATTER_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz_xml fuzz_sasl2

run: build
	./build/natterd -c $(CONFIG)

unit: build build-asan
	cd build && ctest --output-on-failure
	cd build-asan && ctest --output-on-failure

integration: build build-asan
	NATTER_BUILD=$(CURDIR)/build-asan /usr/bin/python3 -m pytest -q tests/integration

fuzz: build-fuzz
	scripts/run-fuzz.sh build-fuzz/fuzz_xml $(FUZZ_SECONDS)
	scripts/run-fuzz.sh build-fuzz/fuzz_sasl2 20

# A tiny run of every benchmark scenario, so the harness cannot rot.
bench-smoke: build
	NATTER_BUILD=$(CURDIR)/build bench/loadgen/smoke.sh

# Not part of `make test`: natter against Prosody and ejabberd (docs/performance.md).
bench: build
	bash bench/run.sh

# LDAP logins against the internal store (docs/performance.md, issue 5).
bench-directory: build deps-test
	NATTER_BUILD=$(CURDIR)/build /usr/bin/python3 bench/directory/run.py

# What client state indication saves a phone (docs/performance.md, issue 13).
bench-csi: build deps-test
	NATTER_BUILD=$(CURDIR)/build /usr/bin/python3 bench/csi_savings.py

# (The benchmark smoke, bench/loadgen/smoke.sh, runs as a ctest in both builds.)
test: deps-test unit integration fuzz

clean:
	rm -rf build build-asan build-fuzz

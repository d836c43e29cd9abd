# Developer entry points for tpcd. `make help` lists them.

SQLC_VERSION := v1.31.1
SQLC ?= $(shell command -v sqlc || echo $(HOME)/go/bin/sqlc)
GO ?= go
# The whole suite on this 2-core machine takes a few minutes; the limit only
# stops a hung run.
TEST_TIMEOUT ?= 12m
# Test packages run at once. Many end-to-end tests spend much of their time
# waiting (a lease to expire, a server to restart, a timeout), so one more
# package than cores keeps both cores busy.
TEST_PACKAGES ?= 3

.PHONY: help build run test test-short ensure-test-tools ensure-test-packages lint generate verify-generated bench ensure-postgres ensure-chromium ensure-psycopg2 ensure-node-pg ensure-jdbc ensure-iproute2 fuzz-short fuzz-long

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

# What `tpcd --version` reports. Go records the commit itself, except in a
# linked git worktree or with -buildvcs=false; then these pass the same
# facts (package buildinfo). Recursive (=), so git runs only for build.
BUILDINFO = github.com/tpcd/tpcd/buildinfo
VERSION_LDFLAGS = -X $(BUILDINFO).revision=$(shell git rev-parse HEAD 2>/dev/null) \
	-X $(BUILDINFO).vcsTime=$(shell git log -1 --format=%cI 2>/dev/null) \
	-X $(BUILDINFO).modified=$(shell git rev-parse HEAD >/dev/null 2>&1 && { test -z "$$(git status --porcelain 2>/dev/null)" && echo false || echo true; })

## build: build bin/tpcd (tpcd --version names the commit)
build:
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o bin/tpcd ./cmd/tpcd

# Flags for `tpcd cluster` in make run, e.g. make run ARGS='-n 2 --base-port 7000';
# they come last, so they override RUN_METRICS_ADDR too (--metrics-addr= turns it off).
ARGS ?=
RUN_METRICS_ADDR ?= 127.0.0.1:9100

## run: build bin/tpcd and start a local cluster (coordinator + 3 participants, embedded PostgreSQL, metrics and status page on RUN_METRICS_ADDR); flags in ARGS='-n 2 --base-port 7000'; Ctrl-C stops it
# The binary itself, not go run, so that make sees its exit status.
run: ensure-postgres build
	bin/tpcd cluster --metrics-addr $(RUN_METRICS_ADDR) $(ARGS)

## test: everything CI checks: formatting, vet, generated code, short fuzzing, and all tests with the race detector
# -count=1: the end-to-end tests run the tpcd binary, which Go's test cache
# does not see, so a cached pass could hide a change to it. The binary is
# built once here for every package that runs it (TPCD_TEST_BINARY, see
# internal/testbin); each would otherwise link its own, about 4 s of CPU.
TEST_BINARY := $(CURDIR)/bin/tpcd-test
test: ensure-test-tools lint verify-generated fuzz-short
	$(GO) build -o $(TEST_BINARY) ./cmd/tpcd
	TPCD_TEST_BINARY=$(TEST_BINARY) $(GO) test -race -count=1 -p $(TEST_PACKAGES) -timeout $(TEST_TIMEOUT) ./...

## ensure-test-tools: install what the tests need: the ensure-* packages in turn (apt installs one at a time), sqlc beside them
# On a fresh machine the packages download and install (network, dpkg)
# while sqlc compiles (CPU, about two minutes): side by side, not one
# after the other.
ensure-test-tools:
	@$(MAKE) --no-print-directory -j2 ensure-test-packages $(SQLC)

ensure-test-packages:
	@for t in ensure-postgres ensure-chromium ensure-psycopg2 ensure-node-pg ensure-jdbc ensure-iproute2; do \
		$(MAKE) --no-print-directory $$t || exit 1; \
	done

## test-short: the tests without the race detector and the generated-code check (quicker while working)
test-short: ensure-postgres ensure-psycopg2 ensure-node-pg ensure-jdbc
	$(GO) test -timeout $(TEST_TIMEOUT) ./...

## lint: gofmt, go vet, and go.mod/go.sum as go mod tidy leaves them
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy and commit the result"; exit 1; }

## generate: regenerate queries/ from queries/*.sql and db/migrations, and queries/dataqueries/ from its .sql files and db/datamigrations (sqlc)
generate: $(SQLC)
	$(SQLC) generate

## verify-generated: fail if the generated code in queries/ or queries/dataqueries/ is stale
verify-generated: $(SQLC)
	$(SQLC) diff

## bench: Go benchmarks (engine step and fold, ...)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Fuzz targets as package:target; each runs FUZZTIME in fuzz-short. Inputs
# that failed once stay in <package>/testdata/fuzz/<target>/ and run with
# every plain `go test` too.
FUZZ_TARGETS := ./engine:FuzzDecodeEvent ./rpc:FuzzRequest ./rpc:FuzzParseRequests ./api:FuzzDecodeParamsAsEncodingJSON
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" at the deadline
# (go.dev/issue/75804, fixed in Go 1.27). 200000 inputs take 5-20 s here.
FUZZTIME ?= 200000x

## fuzz-short: run each fuzz target for FUZZTIME (default 200000 inputs); CI runs it
fuzz-short:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## fuzz-long: the same for 3,000,000 inputs each (a few minutes)
fuzz-long:
	$(MAKE) fuzz-short FUZZTIME=3000000x

## ensure-chromium: install Debian's chromium if missing (the status page test drives it)
ensure-chromium:
	@scripts/ensure-chromium.sh

## ensure-psycopg2: install Debian's python3-psycopg2 if Python cannot import it (the PostgreSQL front door's tests drive it)
ensure-psycopg2:
	@scripts/ensure-psycopg2.sh

## ensure-node-pg: install Node.js (Debian's nodejs) if missing and node-postgres from npm into ~/.cache/tpcd/node-pg (the PostgreSQL front door's tests drive it)
ensure-node-pg:
	@scripts/ensure-node-pg.sh

## ensure-jdbc: install Debian's default-jdk-headless and libpostgresql-jdbc-java if missing (the PostgreSQL front door's tests drive a Java client)
ensure-jdbc:
	@scripts/ensure-jdbc.sh

## ensure-iproute2: install Debian's iproute2 if ip is missing and this runs as root (the network namespace test drives it)
ensure-iproute2:
	@scripts/ensure-iproute2.sh

## ensure-postgres: install PostgreSQL if no server binaries can be found
ensure-postgres:
	@scripts/ensure-postgres.sh

# Built only when no sqlc binary is found, pinned so every checkout generates the
# same code.
$(SQLC):
	GOBIN=$(abspath $(dir $(SQLC))) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)

# twinhull: `make test` installs everything on a fresh Debian machine and runs every test;
# `make demo` runs the operator's lab with the examples. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB := e2e/lab

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with twinhull and the dev tools

.PHONY: system-deps
system-deps: ## install the Debian packages the tests need (prometheus for promtool, openssl)
	@if ! command -v promtool >/dev/null || ! command -v openssl >/dev/null; then \
	  echo "installing Debian packages: prometheus openssl"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) \
	    apt-get install -y -qq prometheus openssl >/dev/null; \
	fi

.PHONY: lab-build
lab-build: system-deps ## build the lab's Kubernetes, etcd, KWOK and Prometheus binaries (cached outside the repo)
	e2e/labkit/build.sh all

HELM_VERSION := v3.22.0
HELM := $(HOME)/.cache/twinhull/tools/helm-$(HELM_VERSION)/helm

$(HELM):
	@echo "building helm $(HELM_VERSION) from its Go module (cached in $(dir $(HELM)))"
	GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN=$(dir $(HELM)) \
	  go install -trimpath -ldflags "-s -w" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# kstatus: sigs.k8s.io/cli-utils' status.Compute (what Flux, kpt and cli-utils report);
# luahealth: Argo CD's health.lua runner on the gopher-lua Argo CD pins (v3.6.1: v1.1.2).
# Built from tools/<name> (go.mod and go.sum pin every module) to a temporary file that is
# moved into place, so an interrupted build is never taken for a cached one.
# The cache is keyed by the sources' content, not their file times: a fresh clone (newer
# files) reuses a build of the same sources instead of rebuilding every CI run.
KSTATUS_VERSION := v0.37.2
KSTATUS_KEY := $(shell cat tools/kstatus/go.mod tools/kstatus/go.sum tools/kstatus/main.go | sha256sum | cut -c1-12)
KSTATUS := $(HOME)/.cache/twinhull/tools/kstatus-$(KSTATUS_VERSION)-$(KSTATUS_KEY)/kstatus
GOPHERLUA_VERSION := v1.1.2
LUAHEALTH_KEY := $(shell cat tools/luahealth/go.mod tools/luahealth/go.sum tools/luahealth/main.go | sha256sum | cut -c1-12)
LUAHEALTH := $(HOME)/.cache/twinhull/tools/luahealth-$(GOPHERLUA_VERSION)-$(LUAHEALTH_KEY)/luahealth
GO_BUILD := GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"

$(KSTATUS):
	@echo "building kstatus (sigs.k8s.io/cli-utils $(KSTATUS_VERSION)) into $(dir $@)"
	@grep -q 'sigs.k8s.io/cli-utils $(KSTATUS_VERSION)$$' tools/kstatus/go.mod || \
	  { echo "tools/kstatus/go.mod does not require cli-utils $(KSTATUS_VERSION)"; exit 1; }
	mkdir -p $(dir $@)
	cd tools/kstatus && $(GO_BUILD) -o $@.tmp.$$$$ . && mv $@.tmp.$$$$ $@

$(LUAHEALTH):
	@echo "building luahealth (github.com/yuin/gopher-lua $(GOPHERLUA_VERSION)) into $(dir $@)"
	@grep -q 'github.com/yuin/gopher-lua $(GOPHERLUA_VERSION)$$' tools/luahealth/go.mod || \
	  { echo "tools/luahealth/go.mod does not require gopher-lua $(GOPHERLUA_VERSION)"; exit 1; }
	mkdir -p $(dir $@)
	cd tools/luahealth && $(GO_BUILD) -o $@.tmp.$$$$ . && mv $@.tmp.$$$$ $@

.PHONY: tools
tools: $(HELM) $(KSTATUS) $(LUAHEALTH) ## build the tools the tests use (helm, kstatus, luahealth), cached outside the repo

.PHONY: crds
crds: $(STAMP) ## regenerate crds/ and the generated files in policies/
	$(BIN)/twinhull crds

.PHONY: crds-check
crds-check: $(STAMP) ## fail when crds/ or policies/ are stale
	$(BIN)/twinhull crds --check

# e2e/bench's scripts import each other and e2e's modules by bare name (their directory and
# e2e/ are on sys.path; `scaling` is a script without .py). handover.py is checked on its own,
# as bench.handover: the `handover` it imports is e2e/handover.py, not itself.
BENCH_MYPY := MYPYPATH=e2e $(BIN)/mypy

.PHONY: lint
lint: $(STAMP) crds-check ## ruff, mypy --strict (operator, e2e/bench), import-linter layers
	$(BIN)/ruff check operator tests e2e
	$(BIN)/mypy
	$(BENCH_MYPY) --exclude '^e2e/bench/handover\.py$$' e2e/bench e2e/bench/scaling
	$(BENCH_MYPY) --explicit-package-bases e2e/bench/handover.py
	$(BIN)/lint-imports

.PHONY: unit
unit: $(STAMP) system-deps $(LUAHEALTH) $(KSTATUS) ## unit tests (no cluster; promtool runs the presets over the golden pages)
	TWINHULL_LUAHEALTH=$(LUAHEALTH) TWINHULL_KSTATUS=$(KSTATUS) $(BIN)/pytest tests -m 'not e2e'

.PHONY: e2e
e2e: $(STAMP) lab-build tools ## e2e tests against the local lab (brings it up and down)
	TWINHULL_HELM=$(HELM) TWINHULL_KSTATUS=$(KSTATUS) TWINHULL_LUAHEALTH=$(LUAHEALTH) \
	  $(BIN)/pytest e2e -m e2e --durations=25

.PHONY: test
test: lint unit e2e ## everything CI runs: lint, unit tests, e2e tests
	$(BIN)/twinhull validate examples/

.PHONY: image
image: ## build the operator image with buildah from a debootstrap base (image/build.sh; cached outside the repo)
	image/build.sh

.PHONY: bench
bench: $(STAMP) ## offline benchmarks (print key=value summary lines); lab ones: see README
	$(BIN)/python tests/bench/validate.py
	$(BIN)/python tests/bench/planning.py
	$(BIN)/python tests/bench/round_memory.py
	$(BIN)/python e2e/bench/scaling

.PHONY: demo
demo: $(STAMP) lab-build ## lab up, examples applied, then a compressed day with a failover
	e2e/demo

.PHONY: lab-up lab-down lab-status
lab-up: lab-build ## start the lab (hub, east, west, Prometheus)
	$(LAB) up
lab-down: ## stop every lab process
	$(LAB) down
lab-status: ## show the lab's processes
	$(LAB) status

.PHONY: clean
clean: ## remove the virtual environment (the lab cache under ~/.cache/twinhull stays)
	rm -rf $(VENV)

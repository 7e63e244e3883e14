# bluemind_ha.cluster: one entry point for the toolchain, the lab and the tests.
# Every target installs what it needs on a fresh Debian machine (apt, venv, image).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
COLLECTIONS := $(CURDIR)/.collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/bluemind_ha/cluster
APT_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client gnupg dpkg-dev rsync shellcheck

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export LAB_CACHE_DIR ?= $(HOME)/.cache/bluemind-ha-lab

.PHONY: help
help:  ## List the targets.
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps:  ## Install the Debian packages the lab needs (only the missing ones).
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

.PHONY: venv
venv: $(BIN)/.installed $(COLLECTION_LINK)  ## Create .venv with the pinned tools.

.PHONY: lint
lint: venv  ## yamllint and ansible-lint (production profile).
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint

.PHONY: sanity
sanity: venv  ## ansible-test sanity in a temporary collection tree.
	$(BIN)/python tests/sanity/run.py

.PHONY: unit
unit: venv  ## Unit tests of the modules and the lab tools.
	$(BIN)/pytest -q tests/unit

.PHONY: image
image: deps venv  ## Build (or reuse) the lab's Debian 12 VM image.
	$(BIN)/python tests/lab/labctl.py image

.PHONY: molecule-drbd molecule-san
molecule-drbd molecule-san: molecule-%: deps venv image
	$(BIN)/molecule test -s $*

.PHONY: test
test: deps venv  ## Run the whole suite: lint, sanity, unit, image, every scenario.
	$(BIN)/python tests/run_suite.py

LAB_STORAGE ?= drbd
LAB_INVENTORY := $(CURDIR)/.cache/lab/hosts.yml
# Where prepare builds the lab's BlueMind stand-in repository (a test double); the
# scenarios' inventory variables find it through this variable, as under molecule.
lab: export MOLECULE_EPHEMERAL_DIRECTORY := $(CURDIR)/.cache/lab
.PHONY: lab
lab: deps venv image  ## Boot the local lab (LAB_STORAGE=drbd|san) and deploy the pair on it.
	$(BIN)/python tests/lab/labctl.py up --lab demo-$(LAB_STORAGE) \
	  --spec molecule/$(LAB_STORAGE)/molecule.yml --inventory $(LAB_INVENTORY) \
	  --instance-config $(CURDIR)/.cache/lab/instance_config.yml
	$(BIN)/ansible-playbook -i $(LAB_INVENTORY) -e lab_name_override=demo-$(LAB_STORAGE) molecule/shared/prepare.yml
	@if [ -f playbooks/site.yml ]; then \
	  $(BIN)/ansible-playbook -i $(LAB_INVENTORY) playbooks/site.yml; \
	else \
	  echo "Deployed: nothing yet (no site playbook); the lab VMs are up and prepared."; \
	fi
	@$(BIN)/python tests/lab/labctl.py list
	@echo "Lab inventory: $(LAB_INVENTORY)   shell: tests/lab/labctl.py ssh demo-$(LAB_STORAGE) node1"

# The operations playbooks (status, switchover both ways with a client writing
# through the floating IP, switchover refused on incomplete storage,
# restore_nominal after a power-off, rebuild of a reinstalled node, upgrade) on
# the pair `make lab` deployed: outside `make test` for time (docs/lab.md).
.PHONY: lab-operations
lab-operations: venv  ## Check the operations playbooks on the pair of `make lab` (same LAB_STORAGE).
	MOLECULE_SCENARIO_DIRECTORY=$(CURDIR)/molecule/$(LAB_STORAGE) MOLECULE_SCENARIO_NAME=$(LAB_STORAGE) \
	MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.cache/lab LAB_NAME=demo-$(LAB_STORAGE) \
	  $(BIN)/pytest -p no:cacheprovider -v molecule/shared/operations

.PHONY: failover-report
failover-report: venv  ## Report the lab's power-off failovers (JSON, markdown, SVG timelines) from the scenarios' logs.
	$(BIN)/python tools/failover_report.py --logs $(LAB_CACHE_DIR)/logs

# N runs (BENCH_RUNS, default 5; BENCH_FRESH_RUNS for the fresh deployments) of
# a fresh deployment, a no-op site.yml, a switchover and a power-off failover on
# the lab (LAB_STORAGE), a client writing through the floating IP:
# LAB_CACHE_DIR/logs/benchmark/ (docs/lab.md). Outside `make test`: about 10
# minutes a fresh deployment under emulation.
BENCH_RUNS ?= 5
BENCH_FRESH_RUNS ?= $(BENCH_RUNS)
benchmark: export MOLECULE_EPHEMERAL_DIRECTORY := $(CURDIR)/.cache/lab
.PHONY: benchmark
benchmark: deps venv image  ## Benchmark the pair on the lab (LAB_STORAGE, BENCH_RUNS=5): JSON, markdown, SVG timeline.
	$(BIN)/python tests/lab/benchmark.py --storage $(LAB_STORAGE) --runs $(BENCH_RUNS) --fresh-runs $(BENCH_FRESH_RUNS)
	$(BIN)/python tools/failover_report.py --logs $(LAB_CACHE_DIR)/logs/benchmark

# Only the labs `make lab` makes: other checkouts' suites and labs may share the
# machine. Every lab of the machine: tests/lab/labctl.py down --all.
LAB_NAMES := demo-drbd demo-san
.PHONY: lab-down
lab-down: venv  ## Power off and remove the labs of `make lab` (demo-drbd, demo-san), no other.
	$(BIN)/python tests/lab/labctl.py down $(addprefix --lab ,$(LAB_NAMES))

.PHONY: reference
reference: venv  ## Regenerate docs/reference.md from the roles' argument_specs.
	$(BIN)/python tools/role_reference.py

# The collection's HTML site as the Ansible ecosystem builds it (antsibull-docs and
# Sphinx, requirements-docs.txt, in .cache/venv-docs): every module, every role
# entry point, README.md and the guides of docs/. Offline but for PyPI (no Galaxy,
# no intersphinx). `make test`'s docs-lint stage lints the same sources.
.PHONY: docs
docs: reference  ## Regenerate docs/reference.md, then build the HTML site into .cache/docs-site/.
	$(BIN)/python tools/docs_site.py build

# Sanity and unit tests on every ansible-core minor from meta/runtime.yml's floor
# (2.16) to 2.19, one virtual environment each (.cache/venv-core/<minor>, pinned in
# tests/core_range.py and tests/requirements-core-range.txt, reused while the pins
# hold). Not part of `make test`: four sanity runs would not fit the suite's
# 50-minute budget. CORE_VERSIONS=2.16,2.17 picks versions.
CORE_VERSIONS ?=
.PHONY: core-range
core-range: $(COLLECTION_LINK)  ## Sanity and unit tests on each ansible-core 2.16-2.19 (CORE_VERSIONS=2.16,2.17).
	$(PYTHON) tests/core_range.py $(if $(CORE_VERSIONS),--versions $(CORE_VERSIONS))

.PHONY: build
build: venv  ## Build the collection tarball.
	$(BIN)/ansible-galaxy collection build --force --output-path dist .

.PHONY: clean
clean: lab-down
	rm -rf dist tests/output

# The front door. Every target installs what it needs itself.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export SLURM_VERSION ?= 26.05
# Versions of Slurm the test run brings up (and parametrizes over); the first is the default for the bridge.
export SLURM_VERSIONS ?= $(SLURM_VERSION)

.PHONY: venv lint test test-unit testbed-up testbed-down testbed-status demo demo-autoscale demo-policy bench-client bench-bridge bench-exporter bench-webhook clean image

$(BIN)/.installed: pyproject.toml
	@# A fresh Debian has python3 without venv/ensurepip: install it (as root), or say the one-line fix.
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { echo "[make] installing python3-venv"; \
	  { apt-get install -y -q python3-venv || { apt-get update -q && apt-get install -y -q python3-venv; }; } >/dev/null \
	  || { echo "python3 lacks venv: run 'apt-get install python3-venv' as root"; exit 1; }; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: venv
	$(BIN)/pytest -m 'not testbed' -q

# The whole suite: lint, the testbed (its own step: on a fresh machine the Kubernetes build takes
# ~15 min, longer than any per-test timeout), then unit and testbed tests (the fixture reuses it).
test: lint testbed-up
	$(BIN)/pytest -rs -v --durations=15

testbed-up: venv
	bash testbed/up.sh

testbed-down:
	bash testbed/down.sh

testbed-status:
	bash testbed/status.sh

demo: testbed-up
	$(BIN)/python -m tools.demo

# Slurm's fair-share and preemption deciding for pods (tools/demo_policy.py, docs/slurm-policies.md).
demo-policy: testbed-up
	$(BIN)/python -m tools.demo_policy

# The autoscaling loop (tools/autoscale_demo.py): writes docs/autoscale.png and docs/autoscale.csv.
demo-autoscale: testbed-up
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q -e '.[demo]'
	$(BIN)/python -m tools.autoscale_demo

bench-client: testbed-up
	$(BIN)/python -m tools.bench_client

bench-bridge: testbed-up
	$(BIN)/python -m tools.bench_bridge

bench-exporter: testbed-up
	$(BIN)/python -m tools.bench_exporter

# Admission latency of 1,000 pod creates with the webhook on vs off (tools/bench_webhook.py).
bench-webhook: testbed-up
	$(BIN)/python -m tools.bench_webhook

clean: testbed-down
	rm -rf $(VENV) .testbed

# The container image (Dockerfile; legacy builder, host networking: the testbed's dockerd has no bridge).
IMAGE ?= slurm-k8s-bridge:dev
image:
	bash testbed/docker.sh up
	set -a; . $${TESTBED_DIR:-.testbed}/docker.env; set +a; \
	  DOCKER_BUILDKIT=0 docker build --network host -t $(IMAGE) . && docker images $(IMAGE)

# FraudSense — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help services up down status logs test lint fmt migrate \
	bench bench-floor bench-micro train load token compose-up compose-down compose-down-volumes k8s-render

COMPOSE := docker compose -p fraudsense -f infra/docker-compose.yml
# `make k8s-render OVERLAY=aks` renders another overlay (k8s/overlays/<name>).
OVERLAY ?= local
# `make train ARGS='--from-labels --eval-days 7'` passes options to `fraudsense-worker train`.
ARGS ?=
# `make bench-micro BENCH=scoring` runs one of the criterion benches in actors/benches.
BENCH ?=
# `make bench BENCH_ARGS='--start-rate 500 --step 500 --max-rate 3000'` passes options to fraudsense-bench.
BENCH_ARGS ?=

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-21s %s\n", $$1, $$2}'

services: ## make sure PostgreSQL, Redis and RabbitMQ run locally (installs them on Debian if missing)
	bash infra/local-services.sh

up: services ## build release binaries, migrate, start api + worker in the background, print the URLs
	bash infra/stack.sh up

down: ## stop the api and worker that `make up` started
	bash infra/stack.sh down

status: ## show whether the api and worker run
	bash infra/stack.sh status

ROLE ?=
SUB ?= dev
TTL ?= 3600
token: ## print a development token, alone on the last line: ROLE=ingest|analyst|admin (comma-separated for several) [SUB=name TTL=seconds]
	@bash infra/stack.sh token "$(ROLE)" "$(SUB)" "$(TTL)"

logs: ## follow the api and worker logs
	tail -n 50 -F .run/api.log .run/worker.log

test: services ## run every test against the local services
	bash infra/test-tools.sh
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint: ## formatting, clippy and dependency checks (cargo deny: licenses, bans, sources; installs cargo-deny if missing), as CI runs them
	bash infra/lint-tools.sh
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo deny --manifest-path Cargo.toml --config infra/deny.toml --locked check --hide-inclusion-graph licenses bans sources

fmt: ## format the code
	cargo fmt --all

migrate: services ## apply database migrations
	cargo run --quiet --bin fraudsense-api -- migrate

bench: ## saturation benchmark against the running stack (needs `make up` first): steps the rate up, compares with the raw broker ceiling [BENCH_ARGS='--max-rate 3000 --json out.json']
	bash infra/stack.sh exec cargo run --quiet --release --bin fraudsense-bench -- $(BENCH_ARGS)

# `make bench-floor FLOOR_ARGS='--rates 1000,3000 --duration 15'` passes options to fraudsense-floor.
FLOOR_ARGS ?=
bench-floor: services ## the services' floor: RabbitMQ, PostgreSQL and Redis alone doing what the promises require per transaction, open loop, no api/worker in the path (run with the stack idle) [FLOOR_ARGS='--rates 1000,3000']
	cargo run --quiet --release --bin fraudsense-floor -- $(FLOOR_ARGS)

bench-micro: ## criterion benchmarks of scoring and the Isolation Forest (BENCH=scoring|iforest for one; docs/benchmarks.md)
	cargo bench -p fraudsense-actors $(if $(BENCH),--bench $(BENCH))

train: ## train a model on generated history and activate it if better; needs Redis + PostgreSQL (ARGS='--from-labels' ...)
	cargo run --release --bin fraudsense-worker -- train $(ARGS)

RATE ?= 1000
DURATION ?= 20
load: ## open-loop load against the running api (make up first): RATE=tx/s DURATION=s [LOAD_ARGS='--fraud-mix 0.1 --json out.json']
	bash infra/stack.sh exec cargo run --quiet --release --bin fraudsense-load -- --rate $(RATE) --duration $(DURATION) $(LOAD_ARGS)

compose-up: ## build the images and start the whole stack in Docker (infra/docker-compose.yml), print the URLs
	bash infra/stack.sh secret
	$(COMPOSE) up -d --build
	@echo "api          http://127.0.0.1:8080   (/health, /ready, /metrics, /openapi.json)"
	@echo "dashboard    http://127.0.0.1:8080/dashboard   (sign in with: make token ROLE=analyst)"
	@echo "RabbitMQ UI  http://127.0.0.1:15672  (fraudsense / fraudsense)"
	@echo "Grafana      http://127.0.0.1:3000   (admin / admin; FraudSense overview dashboard)"
	@echo "Jaeger       http://127.0.0.1:16686"
	@echo "Prometheus   http://127.0.0.1:9090"

compose-down: ## stop the Docker stack (keeps its data volumes)
	$(COMPOSE) down

compose-down-volumes: ## stop the Docker stack and delete its data volumes
	$(COMPOSE) down --volumes

k8s-render: ## render the Kubernetes manifests of k8s/overlays/$(OVERLAY) (OVERLAY=local by default, or aks)
	kubectl kustomize k8s/overlays/$(OVERLAY)

# FraudSense — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help services up down status logs test lint fmt migrate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

services: ## make sure PostgreSQL, Redis and RabbitMQ run locally (installs them on Debian if missing)
	bash infra/local-services.sh

up: services ## build release binaries, migrate, start api + worker in the background, print the URLs
	bash infra/stack.sh up

down: ## stop the api and worker that `make up` started
	bash infra/stack.sh down

status: ## show whether the api and worker run
	bash infra/stack.sh status

logs: ## follow the api and worker logs
	tail -n 50 -F .run/api.log .run/worker.log

test: services ## run every test against the local services
	bash infra/test-tools.sh
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint: ## formatting and clippy, as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	cargo fmt --all

migrate: services ## apply database migrations
	cargo run --quiet --bin fraudsense-api -- migrate

#!/usr/bin/env bash
# Install what building and testing Tollgate needs on a fresh Debian machine, only when missing.
# Runs `apt-get update` at most once. Safe to run repeatedly.
# `--build`: only what building the gateway needs (the quick start), not the test tools.
set -euo pipefail
# Install the packages in need[], if any (apt-get update once).
install_needed() {
  [ ${#need[@]} -gt 0 ] || return 0
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
}
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)        # pingora-core -> libz-ng-sys
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)   # usearch (the semantic cache's graph)
if [ "${1:-}" = "--build" ]; then
  install_needed
  exit 0
fi
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # unit verification test
command -v promtool >/dev/null 2>&1 || need+=(prometheus)   # tests/prometheus.rs: prometheus + promtool
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)   # shared limits and quotas
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)   # tests/sdk.rs: the openai package
command -v chromium >/dev/null 2>&1 || need+=(chromium)   # tests/console.rs: headless browser
install_needed
# tests/deb.rs: the Debian package (a few minutes to compile, once per machine).
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
# tests/sdk.rs: OpenAI's official Python SDK, to check the error classes it raises;
# tests/management.rs: openapi-spec-validator, to check the management API's OpenAPI document.
[ -x target/pyvenv/bin/python ] || python3 -m venv target/pyvenv
if ! target/pyvenv/bin/python -c 'import openai' >/dev/null 2>&1; then
  target/pyvenv/bin/pip install -q openai==3.57.0
fi
# tests/providers.rs: Anthropic's official Python SDK, counting tokens.
if ! target/pyvenv/bin/python -c 'import anthropic' >/dev/null 2>&1; then
  target/pyvenv/bin/pip install -q anthropic==2.15.0
fi
if ! target/pyvenv/bin/python -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  target/pyvenv/bin/pip install -q openapi-spec-validator==0.9.0
fi
# tests/console.rs: Playwright for Python, driving the system's Chromium (its own browser
# download is never used).
if ! target/pyvenv/bin/python -c 'import playwright' >/dev/null 2>&1; then
  target/pyvenv/bin/pip install -q playwright==1.56.0
fi

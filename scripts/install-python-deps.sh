#!/usr/bin/env bash
# The Python side of the tests (a real WebSocket client, numpy for the audio analysis, Schemathesis for
# the OpenAPI conformance), from PyPI when missing.
set -euo pipefail
need=()
python3 -c 'import websockets' 2>/dev/null || need+=(websockets)
python3 -c 'import httpx' 2>/dev/null || need+=(httpx)
python3 -c 'import numpy' 2>/dev/null || need+=(numpy)
python3 -c 'import pytest' 2>/dev/null || need+=(pytest)
# The OpenAPI document's checks (Tests/server/test_openapi.py): its validator, and Schemathesis v4
# (its CLI options and schemathesis.toml keys are v4's).
python3 -c 'import openapi_spec_validator' 2>/dev/null || need+=(openapi-spec-validator)
python3 -c 'import schemathesis' 2>/dev/null || need+=("schemathesis>=4.32,<5")
# A real MCP client for `chamade mcp` (Tests/server/test_mcp.py), and a JSON Schema validator for
# its tools' schemas.
python3 -c 'import mcp' 2>/dev/null || need+=("mcp>=2.3,<3")
python3 -c 'import jsonschema' 2>/dev/null || need+=(jsonschema)
((${#need[@]})) || exit 0
echo "installing ${need[*]} from PyPI" >&2
python3 -m pip install -q --disable-pip-version-check "${need[@]}"

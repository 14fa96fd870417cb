#!/usr/bin/env bash
# The Python side of the tests (a real WebSocket client and numpy for the audio analysis), from PyPI
# when missing.
set -euo pipefail
need=()
python3 -c 'import websockets' 2>/dev/null || need+=(websockets)
python3 -c 'import httpx' 2>/dev/null || need+=(httpx)
python3 -c 'import numpy' 2>/dev/null || need+=(numpy)
python3 -c 'import pytest' 2>/dev/null || need+=(pytest)
((${#need[@]})) || exit 0
echo "installing ${need[*]} from PyPI" >&2
python3 -m pip install -q --disable-pip-version-check "${need[@]}"

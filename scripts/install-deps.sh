#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: with apt-get when run as
# root, otherwise prints the exact command to run and fails.
set -euo pipefail
packages=(libsamplerate0-dev libopus-dev libsndfile1-dev pkg-config)
# The tests drive the server from Python; Debian's pip only if this python3 has none.
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
((${#missing[@]})) || exit 0
cmd="apt-get update && apt-get install -y ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing system packages; run: sudo sh -c '$cmd'" >&2
  exit 1
fi


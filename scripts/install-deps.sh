#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: with apt-get when run as
# root, otherwise prints the exact command to run and fails. With --test, also the real peers the
# tests talk to (`make test`); `make run` needs only the libraries.
set -euo pipefail
packages=(libsamplerate0-dev libopus-dev libsndfile1-dev libre-dev libhiredis-dev libespeak-ng-dev
          libpocketsphinx-dev libsphinxbase-dev pocketsphinx-en-us pkg-config)
# Real RTP peers for the leg tests (Tests/server/test_rtp_legs.py): GStreamer (opusenc/opusdec in
# -base, rtpopuspay/wavenc in -good, netsim in -bad), ffmpeg, and tshark with dumpcap (its debconf
# question about non-root capture takes the default under DEBIAN_FRONTEND=noninteractive; the tests
# capture on loopback, which needs root or dumpcap's capabilities). Real SIP peers for the SIP tests:
# SIPp (sip-tester) and the baresip softphone.
if [[ ${1:-} == --test ]]; then
  packages+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
             ffmpeg tshark sip-tester baresip espeak-ng sox redis-server)
fi
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


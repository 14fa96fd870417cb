#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer + AddressSanitizer) and runs each for SECONDS (default 30).
#   Fuzz/run.sh [SECONDS] [TARGET…]       (make fuzz SECONDS=900; CI: make fuzz, 30 s each)
# First every committed regression input of a target is replayed (each must pass), then the target
# fuzzes from its committed seed corpus (corpus/T) plus a working corpus kept in .work/T.
# A crash, leak or timeout stops the run, non-zero; its input is left as .work/T-crash-… : commit
# it under regressions/T with the fix and a test.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(FuzzClientMessage FuzzBase64Audio FuzzHTTPHead FuzzWebSocketFrames FuzzPCMStream FuzzRTP FuzzJitterBuffer FuzzTelephoneEvent
        FuzzSDP FuzzMeetingURL FuzzWAV)
fi
# SwiftPM's `--sanitize fuzzer` links libFuzzer but does not instrument Swift code for coverage: the
# `-Xswiftc -sanitize=fuzzer,address` does.
flags=(-c release --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing)
swift build "${flags[@]}"
bin=$(swift build "${flags[@]}" --show-bin-path)
mkdir -p .work
summary=.work/summary.txt
: > "$summary"
for t in "${targets[@]}"; do
    if compgen -G "regressions/$t/*" > /dev/null; then
        "$bin/$t" -runs=0 regressions/"$t"/* > ".work/$t-regressions.log" 2>&1 ||
            { cat ".work/$t-regressions.log"; echo "FAIL: $t: a regression input fails again"; exit 1; }
        echo "$t: $(ls regressions/"$t" | wc -l) regression inputs pass"
    fi
    mkdir -p ".work/$t"
    dict=()
    [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    if ! "$bin/$t" ".work/$t" "corpus/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=".work/$t-" > ".work/$t.log" 2>&1; then
        tail -n 60 ".work/$t.log"
        echo "FAIL: $t found a crash, leak or timeout: see Fuzz/.work/$t-*"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' ".work/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' ".work/$t.log")
    cov=$(grep -o 'cov: [0-9]*' ".work/$t.log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' ".work/$t.log" | tail -n 1 | cut -d' ' -f2)
    line="$t: ${seconds} s, ${runs} runs, ${rate} runs/s, coverage ${cov} edges, ${ft} features, 0 crashes"
    echo "$line" | tee -a "$summary"
done

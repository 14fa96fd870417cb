# make run   — installs what is missing, builds release, serves on 127.0.0.1:8787
# make test  — installs what is missing, runs the whole test suite: unit tests, the socket tests
#              against an AddressSanitizer server, ThreadSanitizer and RealtimeSanitizer runs, the
#              memory and pace tests against a plain server, a 2-minute soak, 30 s of each fuzzer
# make test-all — all of that, plus the socket tests against a plain server and the 10-minute,
#              200-agent soak (release)
SWIFT ?= swift
OUT ?= out

.PHONY: all deps test-deps build run test test-all test-speech-realtime test-tsan test-server test-server-paced test-asan test-rtsan soak fuzz bench baselines fixtures clean

all: build

deps:
	@scripts/install-deps.sh

# The libraries, plus the real peers the tests talk to (GStreamer, ffmpeg, tshark).
test-deps:
	@scripts/install-deps.sh --test

build: deps
	$(SWIFT) build -c release --product chamade

run: build
	.build/release/chamade serve --host 127.0.0.1 --port 8787

test: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip TranscriberTests
	$(MAKE) test-speech-realtime
	$(MAKE) test-tsan
	$(MAKE) test-rtsan
	$(MAKE) test-asan
	$(MAKE) test-server-paced
	scripts/run-example.sh
	$(MAKE) fuzz

test-all: test test-server soak

# Transcription on a real clock (20 talkers, recognizers decoding at full tilt) in a run of its own:
# its load would otherwise fall on the other suites' real-time tests, which share the process.
test-speech-realtime:
	$(SWIFT) test --skip-build --filter TranscriberTests

# The server through real sockets: pytest with a real WebSocket client against `chamade serve`,
# then the example agent client against a live server. In `make test` these run against the ASan
# server (test-asan), except the tests that measure memory or real-time pace, which ASan's
# allocator and slowdown would distort: those run here against the plain debug server.
PACED_TESTS = Tests/server/test_footprint.py Tests/server/test_soak.py \
	"Tests/server/test_limits.py::test_unread_replies_close_the_socket_1008" \
	Tests/server/test_probes.py::test_ended_calls_cost_no_delivery_time_and_go_away \
	Tests/server/test_stt.py::test_twenty_talkers_transcribed_keep_every_tick
PACED_DESELECT = --ignore Tests/server/test_footprint.py --ignore Tests/server/test_soak.py \
	--deselect "Tests/server/test_limits.py::test_unread_replies_close_the_socket_1008[invalid]" \
	--deselect "Tests/server/test_limits.py::test_unread_replies_close_the_socket_1008[marks]" \
	--deselect Tests/server/test_probes.py::test_ended_calls_cost_no_delivery_time_and_go_away \
	--deselect Tests/server/test_stt.py::test_twenty_talkers_transcribed_keep_every_tick
test-server: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) build --product chamade
	python3 -m pytest -q Tests/server
	scripts/run-example.sh

test-server-paced: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) build --product chamade
	python3 -m pytest -q $(PACED_TESTS)

# The 10-minute soak of issue 13: 200 agents in 40 rooms, 60 replaced a minute, against a release
# server (docs/reliability.md has its figures).
soak: build
	scripts/soak.sh 200 40 600 60

# AddressSanitizer on the whole build (and UndefinedBehaviorSanitizer on our C: swiftc has no
# -sanitize=undefined on Linux; Swift traps overflow and bounds itself), in its own build folder:
# the unit tests, then the socket tests against an ASan-built server (conftest fails a test whose
# server printed a sanitizer report). XCTest leaks at exit, hence detect_leaks=0 for the unit tests;
# they run one at a time, since ASan's slowdown on parallel real-clock audio tests would fail them.
ASAN_BUILD = --sanitize address -Xcc -fsanitize=undefined --scratch-path .build-asan
export UBSAN_OPTIONS = halt_on_error=1:print_stacktrace=1
# The malloc-counting proofs do not run here: ASan's allocator takes the counting wrapper's place.
ASAN_SKIP = --skip TranscriberTests --skip tickAllocatesNothing --skip perPacketPathsAllocateNothing \
	--skip steadyStateAllocatesNothing --skip theTickAllocatesNothingWithATapOn
test-asan: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) build --build-tests $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test --skip-build --no-parallel $(ASAN_BUILD) $(ASAN_SKIP)
	CHAMADE_BIN=.build-asan/debug/chamade ASAN_OPTIONS=detect_leaks=0 python3 -m pytest -q Tests/server $(PACED_DESELECT)

# The concurrency tests again under ThreadSanitizer, in their own build folder: the rings and the
# clock, legs whose API thread, media worker, event thread and clock all meet (digits queued
# both ways, a timeout, RTCP both ways), and transcription's threads (tap, router, recognizers);
# then the socket tests where the server's threads meet most (streams, events, lifecycle, slow
# readers, legs, three cluster nodes on a real Redis) against TSan-built servers. Tests/tsan-suppressions.txt names the one false
# positive suppressed (a continuation resumed on a NIO thread; the Concurrency runtime is not
# instrumented).
TSAN_SOCKET_TESTS = Tests/server/test_websocket.py Tests/server/test_events.py Tests/server/test_lifecycle.py \
	Tests/server/test_ordering_and_slow.py Tests/server/test_rtp_legs.py Tests/server/test_cluster.py
test-tsan: export TSAN_OPTIONS = suppressions=$(CURDIR)/Tests/tsan-suppressions.txt:print_suppressions=1
test-tsan: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan \
		--filter "twoThreadStress|realThreadsAroundTheClock|telephoneEventsBothWays|timeoutEndsTheLeg|reportsBothWays|realThreadsTranscribe|concurrentClaimsGiveOneOwner|aSilentNodeIsReapedAndItsRoomsMove"
	$(SWIFT) build --product chamade --sanitize=thread --scratch-path .build-tsan
	CHAMADE_BIN=.build-tsan/debug/chamade python3 -m pytest -q $(TSAN_SOCKET_TESTS)

# The tick under clang's RealtimeSanitizer (RealtimeSanitizer/, a package of its own: the runtime it
# links intercepts malloc and locks process-wide): busy ticks report nothing, and a malloc or a lock
# put in the tick on purpose is reported.
SWIFT_TOOLCHAIN := $(shell dirname $$(dirname $$(readlink -f $$(command -v $(SWIFT)))))
RTSAN_LIB := $(firstword $(wildcard $(SWIFT_TOOLCHAIN)/lib/clang/*/lib/linux/libclang_rt.rtsan-x86_64.a))
test-rtsan: deps
	@test -n "$(RTSAN_LIB)" || { echo "no libclang_rt.rtsan in $(SWIFT_TOOLCHAIN)"; exit 1; }
	cd RealtimeSanitizer && $(SWIFT) test -c release -Xlinker --whole-archive -Xlinker $(RTSAN_LIB) -Xlinker --no-whole-archive -Xlinker -lstdc++

# libFuzzer + AddressSanitizer on every parser we own (Fuzz/): the committed regression inputs
# replayed, then FUZZ_SECONDS of fuzzing per target (30 in `make test`; 900 or more for a real run).
FUZZ_SECONDS ?= 30
fuzz: deps
	Fuzz/run.sh $(FUZZ_SECONDS)

# Benchmarks (ordo-one/benchmark, with malloc counts); a separate package so its harness never
# enters the main build.
bench: deps
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark

# The C reference speeds of each stage, to compare with `make bench` in the same sitting.
baselines:
	../shared/baselines/run.sh all

# Regenerate fixtures (needs espeak-ng and sox) and the golden replay outputs.
fixtures: build
	fixtures/generate.sh

# The fixture meeting replayed offline (what `make run` did before the server existed).
replay: build
	.build/release/chamade replay fixtures/speech_16k.wav fixtures/speech_24k.wav fixtures/speech_48k.wav \
		fixtures/tone_1k_24k.wav fixtures/silence_8k.wav --out $(OUT)/replay --rate 48000

clean:
	rm -rf .build .build-tsan .build-asan Benchmarks/.build Fuzz/.build Fuzz/.work RealtimeSanitizer/.build $(OUT)

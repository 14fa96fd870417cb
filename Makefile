# make run   — installs what is missing, builds release, serves on 127.0.0.1:8787
# make test  — installs what is missing, runs the whole test suite (plus the ring stress under TSan)
SWIFT ?= swift
OUT ?= out

.PHONY: all deps test-deps build run test test-speech-realtime test-tsan test-server test-rtsan fuzz bench baselines fixtures clean

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
	$(MAKE) test-server
	$(MAKE) fuzz

# Transcription on a real clock (20 talkers, recognizers decoding at full tilt) in a run of its own:
# its load would otherwise fall on the other suites' real-time tests, which share the process.
test-speech-realtime:
	$(SWIFT) test --skip-build --filter TranscriberTests

# The server through real sockets: pytest with a real WebSocket client against `chamade serve`,
# then the example agent client against a live server.
test-server: test-deps
	scripts/install-python-deps.sh
	$(SWIFT) build --product chamade
	python3 -m pytest -q Tests/server
	scripts/run-example.sh

# The concurrency tests again under ThreadSanitizer, in their own build folder: the rings and the
# clock, legs whose API thread, media worker, event thread and clock all meet (digits queued
# both ways, a timeout, RTCP both ways), and transcription's threads (tap, router, recognizers).
test-tsan: deps
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan \
		--filter "twoThreadStress|realThreadsAroundTheClock|telephoneEventsBothWays|timeoutEndsTheLeg|reportsBothWays|realThreadsTranscribe"

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
	rm -rf .build .build-tsan Benchmarks/.build Fuzz/.build Fuzz/.work RealtimeSanitizer/.build $(OUT)

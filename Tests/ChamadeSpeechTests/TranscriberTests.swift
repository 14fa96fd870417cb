import ChamadeAudioFile
import ChamadeCore
import ChamadeEngine
import ChamadeTesting
import Foundation
import Synchronization
import Testing

@testable import ChamadeSpeech

/// The transcriber on a real clock: recognizers stalled on purpose while 20 talkers speak never
/// delay the room (its ticks keep every deadline), their backlog is bounded by dropping the
/// oldest audio (counted), and once they resume the talkers' lines come, each with its speaker.
@Suite(.serialized) struct TranscriberTests {
    /// The clean fixtures one after the other (about 40 s at 16 kHz).
    static func speech() throws -> [Int16] {
        try (1...12).flatMap { try AudioFile.read(Fixtures.path(String(format: "speech/clean16k_%02d.wav", $0))).samples }
    }

    @Test(.timeLimit(.minutes(2)))
    func aStalledRecognizerNeverDelaysTheRoom() async throws {
        let engine = Engine(configuration: .init(clock: .realTime, shardCount: 1))
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 24)
        let talkers = try (0..<20).map { i in try room.join(rate: .hz16000, receiving: i % 4 == 0) }
        var settings = Transcriber.Settings()
        settings.maxLagSeconds = 1
        let events = Mutex<[Transcriber.Event]>([])
        let transcriber = try Transcriber(settings: settings) { e in events.withLock { $0.append(e) } }
        defer { transcriber.stop() }
        transcriber.attach(room)
        transcriber.stallRecognizers(true)
        engine.start()
        defer { engine.shutdown() }

        // Each talker its own place in the speech, pushed 100 ms at a time in real time.
        let speech = try Self.speech()
        let stop = Atomic<Bool>(false)
        let done = Done(count: 1)
        let feeder = ChamadeTesting.Thread {
            var position = talkers.indices.map { $0 * 16000 * 2 % speech.count }
            var block = [Int16](repeating: 0, count: 320)
            var next = MonotonicClock.now()
            while !stop.load(ordering: .relaxed) {
                for (i, p) in talkers.enumerated() {
                    let start = position[i]
                    let chunk = (0..<1600).map { speech[(start + $0) % speech.count] }
                    position[i] = (start + 1600) % speech.count
                    chunk.withUnsafeBytes { _ = p.push($0) }
                    while block.withUnsafeMutableBufferPointer({ p.pullBlock(into: $0) }) {}
                }
                next += 100_000_000
                MonotonicClock.sleep(until: next)
            }
        }
        feeder.completionHandler = done
        feeder.start()
        try await Task.sleep(for: .seconds(6))
        let stalled = transcriber.statistics
        let lateWhileStalled = engine.statistics().lateTicks
        #expect(stalled.droppedMilliseconds > 0, "\(stalled)")
        #expect(stalled.utterances == 0)
        transcriber.stallRecognizers(false)
        try await Task.sleep(for: .seconds(8))
        stop.store(true, ordering: .relaxed)
        await done.wait()
        let s = engine.statistics()
        #expect(lateWhileStalled == 0 && s.lateTicks == 0, "late ticks: \(lateWhileStalled) stalled, \(s.lateTicks) in all")
        #expect(s.ticks > 600)
        let lines = events.withLock { $0 }.compactMap { e -> ParticipantID? in
            if case .utterance(let p, _, _, _) = e { return p }
            return nil
        }
        #expect(transcriber.statistics.utterances > 0)
        #expect(!lines.isEmpty)
        #expect(Set(lines).isSubset(of: Set(talkers.map(\.id))))
        let speaking = events.withLock { $0 }.filter { if case .speaking = $0 { true } else { false } }
        #expect(speaking.count >= 20)
    }

    /// Every thread of transcription at once, for ThreadSanitizer (`make test` runs it under
    /// TSan): the clock filling the tap, the router reading it, two recognizer workers, the events'
    /// handler, a detach and a re-attach while talkers speak.
    @Test(.timeLimit(.minutes(2)))
    func realThreadsTranscribe() async throws {
        let engine = Engine(configuration: .init(clock: .realTime, shardCount: 1))
        let room = try engine.createRoom(nativeRate: .hz48000, capacity: 8)
        let talkers = try [SampleRate.hz16000, .hz8000, .hz48000].map { try room.join(rate: $0, receiving: false) }
        let utterances = Atomic<Int>(0)
        let transcriber = try Transcriber { e in
            if case .utterance = e { utterances.add(1, ordering: .relaxed) }
        }
        defer { transcriber.stop() }
        transcriber.attach(room)
        engine.start()
        defer { engine.shutdown() }
        let speech = try Self.speech()
        for (i, p) in talkers.enumerated() {
            // Each talker 6 s of the fixtures from its own place, at its own rate (nearest sample).
            let rate = p.sampleRate.hertz
            let samples = (0..<(6 * rate)).map { speech[(i * 48000 + $0 * 16000 / rate) % speech.count] }
            samples.withUnsafeBytes { _ = p.push($0) }
        }
        try await Task.sleep(for: .seconds(3))
        transcriber.detach(room)
        transcriber.attach(room)
        try await Task.sleep(for: .seconds(7))
        #expect(utterances.load(ordering: .relaxed) > 0)
        #expect(transcriber.isAttached(room))
    }
}

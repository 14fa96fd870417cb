import CRealtimeSanitizer
import ChamadeCore
@_spi(Testing) import ChamadeEngine
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Busy rooms on the virtual clock: mixed rates, talkers pushing in odd chunks, listeners, marks,
/// clears, a join and a leave, ticked on this thread. The engine marks each tick a real-time
/// section; the runtime aborts the process at the first malloc, lock or blocking call inside one.
/// The first 300 ticks (first-use metadata, rate groups) run with the sanitizer off.
func tickBusyRooms(_ configuration: Engine.Configuration) throws {
    let engine = Engine(configuration: configuration)
    let rates: [SampleRate] = [.hz8000, .hz16000, try SampleRate(hertz: 24000), .hz48000, try SampleRate(hertz: 22050)]
    let rooms = try [SampleRate.hz48000, .hz16000].map { try engine.createRoom(nativeRate: $0, capacity: 32) }
    var participants: [Participant] = []
    for room in rooms {
        for i in 0..<10 { participants.append(try room.join(rate: rates[i % rates.count], receiving: i != 9)) }
    }
    let chunks: [[UInt8]] = participants.enumerated().map { i, p in
        let n = p.sampleRate.hertz / 10
        return (0..<n).flatMap { s -> [UInt8] in
            let v = Int16(8000 * sin(Double(s) * Double(300 + 50 * i) * 2 * .pi / Double(p.sampleRate.hertz)))
            return [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)]
        }
    }
    var blocks = participants.map { [Int16](repeating: 0, count: $0.sampleRate.blockSampleCount) }
    var visitor: Participant?
    func step(_ t: Int) throws {
        for (i, p) in participants.enumerated() where i % 3 == 0 || (t / 100) % 2 == 0 {
            let size = 1 + (t * 7919 + i * 104_729) % chunks[i].count
            chunks[i][0..<size].withUnsafeBytes { _ = p.push($0) }
        }
        if t % 50 == 0 { _ = participants[1].mark() }
        if t % 170 == 0 { _ = participants[2].requestClear() }
        if t == 1000 { visitor = try rooms[0].join(rate: .hz16000) }
        if t == 1500 { visitor?.leave() }
        engine.tick()
        engine.drainEvents()
        for (i, p) in participants.enumerated() where i != 5 {
            while blocks[i].withUnsafeMutableBufferPointer({ p.pullBlock(into: $0) }) {}
        }
    }
    __rtsan_disable()
    for t in 0..<300 { try step(t) }
    __rtsan_enable()
    for t in 300..<2300 { try step(t) }
}

func virtualClock() -> Engine.Configuration { Engine.Configuration(clock: .virtual, shardCount: 2) }

@Suite("RealtimeSanitizer on the tick")
struct TickTests {
    /// 2000 busy ticks with the sanitizer watching: the child process ends normally, so nothing in
    /// any tick allocated, locked or blocked.
    @Test func busyTicksAreRealtimeSafe() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            try tickBusyRooms(virtualClock())
        }
        let report = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(!report.contains("RealtimeSanitizer"), "\(report.prefix(4000))")
    }

    /// The same ticks with a malloc put in the tick on purpose: the sanitizer reports it and stops
    /// the process. This is what proves the tick is really marked as a real-time section.
    @Test func aDeliberateAllocationInTheTickIsReported() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var c = virtualClock()
            let sink = Sink()
            c.tickProbe = {
                // The pointer escapes into an atomic, so the optimizer cannot drop the malloc.
                let p = malloc(64)
                sink.address.store(UInt(bitPattern: p), ordering: .relaxed)
                free(p)
            }
            try tickBusyRooms(c)
        }
        let report = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(report.contains("RealtimeSanitizer") && report.contains("malloc"), "\(report.prefix(2000))")
    }

    /// And a lock taken in the tick on purpose.
    @Test func aDeliberateLockInTheTickIsReported() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var c = virtualClock()
            let mutex = PlainMutex()
            c.tickProbe = {
                pthread_mutex_lock(mutex.pointer)
                pthread_mutex_unlock(mutex.pointer)
            }
            try tickBusyRooms(c)
        }
        let report = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(report.contains("RealtimeSanitizer") && report.contains("pthread_mutex_lock"), "\(report.prefix(2000))")
    }
}

/// Where the deliberate allocation's address goes.
final class Sink: Sendable {
    let address = Atomic<UInt>(0)
}

/// A pthread mutex made before the tick, so that taking it is the probe's only violation.
final class PlainMutex: @unchecked Sendable {
    // SAFETY: the pointer is only used with pthread_mutex_* calls, which are thread-safe.
    let pointer = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(pointer, nil) }
}

import ChamadeCore
import ChamadeEngine
import ChamadeTesting
import Foundation
import Testing

@Suite("The 20 ms clock")
struct ClockTests {
    /// 60 s of wake-ups, each late by a random amount under a block, run exactly 3000 ticks on
    /// deadlines that never drift.
    @Test func threeThousandTicksInSixtySeconds() {
        var schedule = TickSchedule(start: 1_000_000_000)
        var rng = SeededRandom(seed: 42)
        let end = Int64(1_000_000_000) + 60_000_000_000
        while schedule.deadline < end {
            let wake = schedule.deadline + Int64.random(in: 0..<15_000_000, using: &rng)
            let deadline = schedule.begin(now: wake)
            #expect(deadline == 1_000_000_000 + Int64(schedule.tickCount) * 20_000_000)
            schedule.end(now: wake + Int64.random(in: 0..<4_000_000, using: &rng))
        }
        #expect(schedule.tickCount == 3000)
        #expect(schedule.skippedCount == 0)
        #expect(schedule.lateCount == 0)
    }

    /// More than a block behind: skip forward to the newest deadline passed, count the skipped
    /// ticks, no burst; a tick finishing after the next deadline is counted late.
    @Test func fallingBehindSkipsAndCounts() {
        var schedule = TickSchedule(start: 0)
        _ = schedule.begin(now: 0)
        schedule.end(now: 1_000_000)
        // Next deadline 20 ms; we wake at 65 ms: 20 and 40 ms are skipped, 60 ms runs.
        let deadline = schedule.begin(now: 65_000_000)
        #expect(deadline == 60_000_000)
        #expect(schedule.skippedCount == 2)
        // It ends at 85 ms: after the next deadline (80 ms), so late.
        let late = schedule.end(now: 85_000_000)
        #expect(late)
        #expect(schedule.lateCount == 1)
        #expect(schedule.deadline == 80_000_000)
        // 19.999 ms behind is not skipped.
        let next = schedule.begin(now: 99_999_999)
        #expect(next == 80_000_000)
        #expect(schedule.skippedCount == 2)
        let onTime = !schedule.end(now: 99_999_999)
        #expect(onTime)
        #expect(schedule.tickCount == 3)
    }

    /// The real clock for 5 s: the tick count matches elapsed time within ±1, with no drift trend
    /// between the first and second halves.
    @Test(.timeLimit(.minutes(1)))
    func realClockKeepsTime() async throws {
        let engine = Engine(configuration: .init(clock: .realTime, shardCount: 1))
        let room = try engine.createRoom(nativeRate: .hz48000)
        let p = try room.join(rate: .hz16000)
        engine.start()
        defer { engine.shutdown() }
        try await Task.sleep(for: .milliseconds(200))
        func sample() -> (Int64, Int) {
            let t = MonotonicClock.now()
            return (t, Int(room.tickCount) + engine.statistics().skippedTicks)
        }
        let (t0, n0) = sample()
        try await Task.sleep(for: .milliseconds(2500))
        let (t1, n1) = sample()
        try await Task.sleep(for: .milliseconds(2500))
        let (t2, n2) = sample()
        let expected1 = Double(t1 - t0) / 20_000_000
        let expected2 = Double(t2 - t1) / 20_000_000
        #expect(abs(Double(n1 - n0) - expected1) <= 1.5, "\(n1 - n0) ticks in \(expected1) periods")
        #expect(abs(Double(n2 - n1) - expected2) <= 1.5, "\(n2 - n1) ticks in \(expected2) periods")
        #expect(abs(Double(n2 - n0) - Double(t2 - t0) / 20_000_000) <= 1.5)
        // Blocks were delivered at the clock's pace.
        #expect(p.availableBlockCount() >= 50)
    }
}

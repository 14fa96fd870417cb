#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `CLOCK_MONOTONIC` in nanoseconds, and absolute-deadline sleeping. Real-time safe (no allocation;
/// `sleep(until:)` blocks by design, on the clock thread only, between ticks).
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point; never goes back.
    public static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// CPU time consumed by the calling thread, in nanoseconds.
    public static func threadCPUTime() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Sleeps until the absolute monotonic time `deadline` (`clock_nanosleep` with `TIMER_ABSTIME`,
    /// so a late wake-up never shifts later deadlines).
    public static func sleep(until deadline: Int64) {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        #if canImport(Glibc)
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
        #else
        let remaining = deadline - now()
        if remaining > 0 { usleep(UInt32(remaining / 1000)) }
        #endif
    }
}

/// The deadline arithmetic of a 20 ms clock, apart from any real clock so it can be tested exactly.
///
/// Deadlines are absolute: the next one is the previous one plus the period, never "now + period",
/// so there is no drift (3000 ticks in 60 s exactly). A tick woken more than one period behind
/// skips forward to the newest deadline that has passed, and the skipped ticks are counted rather
/// than run in a burst. A tick that ends after the next deadline is counted late.
public struct TickSchedule: Sendable {
    /// The period in nanoseconds (20 ms).
    public let period: Int64
    /// The deadline of the tick to run next.
    public private(set) var deadline: Int64
    /// Ticks run.
    public private(set) var tickCount = 0
    /// Ticks not run because the clock fell more than a period behind.
    public private(set) var skippedCount = 0
    /// Ticks that finished after the next tick's deadline.
    public private(set) var lateCount = 0

    public init(start: Int64, period: Int64 = 20_000_000) {
        precondition(period > 0)
        self.period = period
        self.deadline = start
    }

    /// Called on waking at `now` (≥ the deadline, or the sleep returned early): returns the deadline
    /// of the tick to run now, after skipping any that are more than a period in the past.
    public mutating func begin(now: Int64) -> Int64 {
        let behind = now - deadline
        if behind >= period {
            let skip = behind / period
            skippedCount += Int(skip)
            deadline += skip * period
        }
        return deadline
    }

    /// Called when the tick's work is done at `now`; advances to the next deadline.
    /// Returns whether this tick was late.
    @discardableResult
    public mutating func end(now: Int64) -> Bool {
        tickCount += 1
        let late = now > deadline + period
        if late { lateCount += 1 }
        deadline += period
        return late
    }
}

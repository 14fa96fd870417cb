import Glibc
import NIOConcurrencyHelpers

/// A thread of its own that owns one Redis connection and runs jobs on it in the order they came,
/// plus a periodic job (the node's heartbeat). Blocking Redis I/O happens here only: never on a
/// tick, an event loop or the Swift concurrency pool.
///
/// When Redis cannot be reached, jobs fail at once with `unreachable` (they never wait for a
/// reconnection), and a new connection is tried at most every `retryMilliseconds`.
final class RedisWorker: @unchecked Sendable {
    typealias Job = (RedisConnection?) -> Void

    private struct Queue {
        var jobs: [Job] = []
        var stopping = false
    }
    private let queue = NIOLockedValueBox(Queue())
    private let wake = ConditionLock(value: 0)
    private let connection: RedisConnection
    private let periodMilliseconds: Int
    private let retryMilliseconds = 250
    /// Jobs waiting at most; beyond, fire-and-forget jobs are dropped (Redis is too slow or gone,
    /// and what they write is written again when the node reasserts its state).
    static let maxQueued = 10_000

    /// Runs on the worker thread every period (after the queued jobs), with the connection, or
    /// nil while Redis cannot be reached; `reconnected` is true on its first run after a new
    /// connection was made.
    private let periodic: (RedisConnection?, _ reconnected: Bool) -> Void
    private let thread = NIOLockedValueBox<pthread_t?>(nil)

    init(
        host: String, port: Int, timeoutMilliseconds: Int, periodMilliseconds: Int,
        periodic: @escaping (RedisConnection?, Bool) -> Void
    ) {
        connection = RedisConnection(host: host, port: port, timeoutMilliseconds: timeoutMilliseconds)
        self.periodMilliseconds = periodMilliseconds
        self.periodic = periodic
    }

    func start() {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        pthread_create(&t, nil, { raw in
            let worker = Unmanaged<RedisWorker>.fromOpaque(raw!).takeRetainedValue()
            worker.run()
            return nil
        }, box.toOpaque())
        thread.withLockedValue { $0 = t }
    }

    /// Queues `job`; false (and the job is not run) when the queue is full or the worker stopped.
    @discardableResult
    func submit(_ job: @escaping Job) -> Bool {
        let accepted = queue.withLockedValue { q -> Bool in
            guard !q.stopping, q.jobs.count < Self.maxQueued else { return false }
            q.jobs.append(job)
            return true
        }
        if accepted { signal() }
        return accepted
    }

    /// Runs `body` on the worker and returns its result.
    func perform<T: Sendable>(_ body: @escaping (RedisConnection?) throws(RedisError) -> T) async throws(RedisError) -> T {
        let result: Result<T, RedisError> = await withCheckedContinuation { c in
            let accepted = submit { connection in
                do throws(RedisError) { c.resume(returning: .success(try body(connection))) } catch {
                    c.resume(returning: .failure(error))
                }
            }
            if !accepted { c.resume(returning: .failure(.unreachable("the Redis queue is full"))) }
        }
        return try result.get()
    }

    /// Runs the jobs already queued, then `last`, then ends the thread (and waits for it).
    func stop(finally last: @escaping Job) {
        let first = queue.withLockedValue { q -> Bool in
            guard !q.stopping else { return false }
            q.jobs.append(last)
            q.stopping = true
            return true
        }
        guard first else { return }
        signal()
        if let t = thread.withLockedValue({ $0 }) { pthread_join(t, nil) }
    }

    private func signal() {
        wake.lock()
        wake.unlock(withValue: 1)
    }

    private func run() {
        var lastAttempt: Int64 = .min / 2
        var nextPeriod = Self.nowMs()
        while true {
            // Connect when needed (at most every retryMilliseconds).
            var reconnected = false
            if !connection.isConnected, Self.nowMs() - lastAttempt >= Int64(retryMilliseconds) {
                lastAttempt = Self.nowMs()
                do throws(RedisError) {
                    try connection.connect()
                    reconnected = true
                } catch {}
            }
            // After a new connection the node's state is written again before any job runs (a
            // claim needs the node's lease back).
            if reconnected {
                periodic(connection, true)
                nextPeriod = Self.nowMs() + Int64(periodMilliseconds)
            }
            let (jobs, stopping) = queue.withLockedValue { q in
                defer { q.jobs.removeAll(keepingCapacity: true) }
                return (q.jobs, q.stopping)
            }
            for job in jobs { job(connection.isConnected ? connection : nil) }
            if stopping { break }
            let now = Self.nowMs()
            if now >= nextPeriod {
                periodic(connection.isConnected ? connection : nil, false)
                nextPeriod = now + Int64(periodMilliseconds)
            }
            // Sleep until the next period, a job, or the next reconnection attempt.
            var wait = nextPeriod - Self.nowMs()
            if !connection.isConnected { wait = min(wait, Int64(retryMilliseconds)) }
            if wait > 0, wake.lock(whenValue: 1, timeoutSeconds: Double(wait) / 1000) {
                wake.unlock(withValue: 0)
            }
        }
        connection.disconnect()
    }

    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

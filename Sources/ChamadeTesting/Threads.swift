import Foundation

/// A real OS thread running `body` (not a task), for concurrency tests of the rings and the engine.
public final class Thread: @unchecked Sendable {
    private let body: @Sendable () -> Void
    private var handle: pthread_t?
    public var completionHandler: Done?

    public init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    public func start() {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let me = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            me.completionHandler?.signal()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed")
        handle = t
        pthread_detach(t)
    }
}

/// Counts down completions; `wait()` suspends until all have arrived.
public final class Done: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(count: Int) { remaining = count }

    public func signal() {
        let resume: [CheckedContinuation<Void, Never>] = lock.withLock {
            remaining -= 1
            guard remaining <= 0 else { return [] }
            defer { waiters = [] }
            return waiters
        }
        for w in resume { w.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if remaining <= 0 { return true }
                waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

import ChamadeEngine
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Synchronization

/// Moves fresh blocks of mix-minus from the engine to the sockets right after each tick.
///
/// One thread, woken by the engine's tick signal (not a timer: delivery adds no waiting to the
/// latency). It visits only the participants the engine lists as having a fresh block, never every
/// call; it queues each block once per receiving socket and wakes each event loop once per tick
/// for all of that loop's sockets, not once per socket.
final class Delivery: Service, Sendable {
    let engine: Engine
    let store: CallStore

    init(engine: Engine, store: CallStore) {
        self.engine = engine
        self.store = store
    }

    func run() async throws {
        let flag = RunFlag()
        let (done, finished) = AsyncStream<Void>.makeStream()
        let thread = Thread { [engine, store] in
            Self.loop(engine: engine, store: store, flag: flag)
            finished.finish()
        }
        thread.name = "chamade-delivery"
        thread.start()
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                for await _ in done {}
            } onCancel: {
                flag.stop()
            }
        } onGracefulShutdown: {
            flag.stop()
        }
    }

    private static func loop(engine: Engine, store: CallStore, flag: RunFlag) {
        var ready: [ParticipantID] = []
        ready.reserveCapacity(1024)
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, outboxes: [Outbox])] = [:]
        let scratch = UnsafeMutableBufferPointer<Int16>.allocate(capacity: 960)
        defer { scratch.deallocate() }
        let allocator = ByteBufferAllocator()
        while flag.isRunning {
            guard engine.tickSignal.wait(milliseconds: 100) else { continue }
            ready.removeAll(keepingCapacity: true)
            engine.drainReadyParticipants { ready.append($0) }
            guard !ready.isEmpty else { continue }
            let calls: [Call] = store.byParticipant.withLockedValue { index in ready.compactMap { index[$0] } }
            for call in calls {
                guard let participant = call.participant else { continue }
                let receivers = call.receivers
                participant.pullReadyBlocks(into: scratch) { block, _ in
                    guard !receivers.isEmpty else { return }
                    let buffer = block.withMemoryRebound(to: UInt8.self) { bytes in
                        var b = allocator.buffer(capacity: bytes.count)
                        b.writeBytes(UnsafeRawBufferPointer(bytes))
                        return b
                    }
                    for outbox in receivers where outbox.queue(audio: buffer) {
                        let loop = outbox.channel.eventLoop
                        byLoop[ObjectIdentifier(loop), default: (loop, [])].outboxes.append(outbox)
                    }
                }
            }
            for (_, entry) in byLoop {
                let outboxes = entry.outboxes
                entry.loop.execute { for o in outboxes { o.drain() } }
            }
            byLoop.removeAll(keepingCapacity: true)
        }
    }
}

/// A stop flag shared with a thread.
final class RunFlag: Sendable {
    private let running = Atomic<Bool>(true)
    // ORDERING: relaxed; polled at least every 100 ms, nothing is published through it.
    var isRunning: Bool { running.load(ordering: .relaxed) }
    func stop() { running.store(false, ordering: .relaxed) }
}

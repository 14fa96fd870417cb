import NIOConcurrencyHelpers
import Glibc

/// Redis pub/sub on a connection and a thread of its own: subscribed to the channels it is told
/// (the account-event channels of the keys this node has subscribers for), handing each message
/// to `onMessage` on its thread. After a lost connection it reconnects and subscribes again.
final class RedisSubscriber: @unchecked Sendable {
    private struct Wanted {
        var channels: Set<String> = []
        /// Channels Redis confirmed on the current connection.
        var confirmed: Set<String> = []
        /// Called once their channel is confirmed.
        var waiters: [String: [@Sendable () -> Void]] = [:]
        var stopping = false
    }
    private let wanted = NIOLockedValueBox(Wanted())
    private let connection: RedisConnection
    private let onMessage: (_ channel: String, _ payload: String) -> Void
    private let thread = NIOLockedValueBox<pthread_t?>(nil)
    /// How long a read waits before the subscriptions are compared with what is wanted.
    static let pollMilliseconds: Int32 = 50

    init(host: String, port: Int, timeoutMilliseconds: Int, onMessage: @escaping (String, String) -> Void) {
        connection = RedisConnection(host: host, port: port, timeoutMilliseconds: timeoutMilliseconds)
        self.onMessage = onMessage
    }

    func start() {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        pthread_create(&t, nil, { raw in
            Unmanaged<RedisSubscriber>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        thread.withLockedValue { $0 = t }
    }

    /// Subscribes to `channel`; `confirmed` is called once Redis has confirmed it (at once when it
    /// already has).
    func subscribe(_ channel: String, confirmed: @escaping @Sendable () -> Void) {
        let now = wanted.withLockedValue { w -> Bool in
            w.channels.insert(channel)
            if w.confirmed.contains(channel) { return true }
            w.waiters[channel, default: []].append(confirmed)
            return false
        }
        if now { confirmed() }
    }
    func unsubscribe(_ channel: String) { wanted.withLockedValue { _ = $0.channels.remove(channel) } }

    func stop() {
        wanted.withLockedValue { $0.stopping = true }
        if let t = thread.withLockedValue({ $0 }) { pthread_join(t, nil) }
    }

    private func run() {
        var subscribed: Set<String> = []
        var lastAttempt: Int64 = .min / 2
        while true {
            let (channels, stopping) = wanted.withLockedValue { ($0.channels, $0.stopping) }
            if stopping { break }
            if !connection.isConnected {
                subscribed = []
                wanted.withLockedValue { $0.confirmed = [] }
                if RedisWorker.nowMs() - lastAttempt < 250 {
                    usleep(50_000)
                    continue
                }
                lastAttempt = RedisWorker.nowMs()
                do throws(RedisError) { try connection.connect() } catch {
                    continue
                }
            }
            do throws(RedisError) {
                let add = channels.subtracting(subscribed)
                let remove = subscribed.subtracting(channels)
                if !add.isEmpty { try connection.send(["SUBSCRIBE"] + add.sorted()) }
                if !remove.isEmpty { try connection.send(["UNSUBSCRIBE"] + remove.sorted()) }
                subscribed = channels
                while let reply = try connection.bufferedReply() { deliver(reply) }
                if try connection.awaitBytes(milliseconds: Self.pollMilliseconds) {
                    while let reply = try connection.bufferedReply() { deliver(reply) }
                }
            } catch {
                // The connection is gone: reconnect and subscribe again on the next turn.
            }
        }
        connection.disconnect()
    }

    private func deliver(_ reply: RedisReply) {
        let parts = reply.array
        if parts.count == 3, parts[0].string == "subscribe", let channel = parts[1].string {
            let waiters = wanted.withLockedValue { w in
                w.confirmed.insert(channel)
                return w.waiters.removeValue(forKey: channel) ?? []
            }
            for w in waiters { w() }
            return
        }
        if parts.count == 3, parts[0].string == "unsubscribe", let channel = parts[1].string {
            wanted.withLockedValue { _ = $0.confirmed.remove(channel) }
            return
        }
        guard parts.count == 3, parts[0].string == "message", let channel = parts[1].string, let payload = parts[2].string
        else { return }
        onMessage(channel, payload)
    }
}

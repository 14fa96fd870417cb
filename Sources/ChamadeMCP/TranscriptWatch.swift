import HummingbirdWSClient
import Logging
import MCP

/// Subscriptions to calls' transcript resources (SPEC §8): each subscribed call gets a WebSocket
/// to `chamade serve` (its stream, audio never asked for) whose `call_transcript` events become
/// `notifications/resources/updated` at once; nothing is polled. The socket closes on
/// unsubscribe, or when the server ends the call.
actor TranscriptWatch {
    private let api: APIClient
    private let logger: Logger
    private let notify: @Sendable (String) async -> Void
    private var watching: [String: Task<Void, Never>] = [:]

    init(api: APIClient, logger: Logger, notify: @escaping @Sendable (String) async -> Void) {
        self.api = api
        self.logger = logger
        self.notify = notify
    }

    /// `chamade://calls/{call_id}/transcript` → the call id.
    static func callID(of uri: String) -> String? {
        let prefix = "chamade://calls/", suffix = "/transcript"
        guard uri.hasPrefix(prefix), uri.hasSuffix(suffix), uri.count > prefix.count + suffix.count else { return nil }
        let id = String(uri.dropFirst(prefix.count).dropLast(suffix.count))
        return id.contains("/") ? nil : id
    }

    static func uri(of callID: String) -> String { "chamade://calls/\(callID)/transcript" }

    func subscribe(_ uri: String, callID: String) {
        guard watching[uri] == nil else { return }
        let (api, logger, notify) = (api, logger, notify)
        watching[uri] = Task {
            do {
                try await WebSocketClient.connect(url: api.streamURL(callID: callID), logger: logger) { inbound, _, _ in
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = message, text.contains("\"call_transcript\"") else { continue }
                        await notify(uri)
                    }
                }
            } catch {
                logger.notice("transcript watch of \(callID) ended: \(error)")
            }
        }
    }

    func unsubscribe(_ uri: String) {
        watching.removeValue(forKey: uri)?.cancel()
    }

    func stopAll() {
        for task in watching.values { task.cancel() }
        watching = [:]
    }
}

import Foundation
import NIOConcurrencyHelpers

/// The account events of each key (SPEC §3, `GET /api/events`): every state change of the key's
/// calls as `call_state`, and `call_ringing` when an inbound call starts ringing. Each subscriber is
/// a WebSocket's outbox, so a slow subscriber is bounded like any other socket.
final class AccountEvents: Sendable {
    private let subscribers = NIOLockedValueBox<[String: [ObjectIdentifier: Outbox]]>([:])

    func subscribe(apiKey: String, _ outbox: Outbox) {
        subscribers.withLockedValue { $0[apiKey, default: [:]][ObjectIdentifier(outbox)] = outbox }
    }

    func unsubscribe(apiKey: String, _ outbox: Outbox) {
        subscribers.withLockedValue { s in
            s[apiKey]?.removeValue(forKey: ObjectIdentifier(outbox))
            if s[apiKey]?.isEmpty == true { s.removeValue(forKey: apiKey) }
        }
    }

    /// `{"type":"call_state","call_id":…,"state":…}` to the key's subscribers.
    func publish(apiKey: String, state: CallState, callID: String) {
        struct Event: Encodable {
            var type = "call_state"
            var callID: String
            var state: CallState
            enum CodingKeys: String, CodingKey {
                case type, state
                case callID = "call_id"
            }
        }
        publish(apiKey: apiKey, Event(callID: callID, state: state))
    }

    func publish(apiKey: String, _ event: some Encodable) {
        let targets = subscribers.withLockedValue { $0[apiKey].map { Array($0.values) } ?? [] }
        guard !targets.isEmpty else { return }
        let text = WireJSON.encode(event)
        for t in targets { t.send(text: text) }
    }
}

/// JSON for the wire: compact, keys sorted so messages are stable, slashes left alone.
enum WireJSON {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

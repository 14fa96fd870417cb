import ChamadeCluster
import Foundation
import NIOConcurrencyHelpers

/// The account events of each key (SPEC §3, `GET /api/events`): every state change of the key's
/// calls as `call_state`, and `call_ringing` when an inbound call starts ringing. Each subscriber is
/// a WebSocket's outbox, so a slow subscriber is bounded like any other socket.
///
/// In a cluster, every event also goes to Redis on the key's channel, and this node hears the other
/// nodes' events of the keys it has subscribers for (`deliverRemote`): a subscriber on any node
/// sees the key's calls on every node.
final class AccountEvents: Sendable {
    private let subscribers = NIOLockedValueBox<[String: [ObjectIdentifier: EventSubscription]]>([:])
    let cluster: ClusterNode?
    /// Each key's cluster tag, and the key of each tag (computed once per key).
    private let tags = NIOLockedValueBox<(byKey: [String: String], byTag: [String: String])>(([:], [:]))

    init(cluster: ClusterNode? = nil) {
        self.cluster = cluster
    }

    private func tag(of apiKey: String) -> String {
        if let tag = tags.withLockedValue({ $0.byKey[apiKey] }) { return tag }
        let tag = ClusterNode.tag(ofKey: apiKey)
        tags.withLockedValue {
            $0.byKey[apiKey] = tag
            $0.byTag[tag] = apiKey
        }
        return tag
    }

    /// A subscriber of the key's events from now on (the upgrade is decided: its socket is not
    /// ready yet). In a cluster, the other nodes' events of the key are heard once `heard` returns.
    func subscribe(apiKey: String) -> EventSubscription {
        let subscription = EventSubscription()
        subscribers.withLockedValue { $0[apiKey, default: [:]][ObjectIdentifier(subscription)] = subscription }
        cluster?.subscribe(keyTag: tag(of: apiKey))
        return subscription
    }

    /// In a cluster: returns once Redis confirmed the key's channel (at most a second).
    func heardAcrossNodes(apiKey: String) async {
        await cluster?.subscribed(keyTag: tag(of: apiKey))
    }

    func unsubscribe(apiKey: String, _ subscription: EventSubscription) {
        subscribers.withLockedValue { s in
            s[apiKey]?.removeValue(forKey: ObjectIdentifier(subscription))
            if s[apiKey]?.isEmpty == true { s.removeValue(forKey: apiKey) }
        }
        cluster?.unsubscribe(keyTag: tag(of: apiKey))
    }

    /// Another node's event of the key with this tag, to this node's subscribers.
    func deliverRemote(keyTag: String, text: String) {
        guard let apiKey = tags.withLockedValue({ $0.byTag[keyTag] }) else { return }
        deliverLocal(apiKey: apiKey, text: text)
    }

    private func deliverLocal(apiKey: String, text: String) {
        let targets = subscribers.withLockedValue { $0[apiKey].map { Array($0.values) } ?? [] }
        for t in targets { t.deliver(text) }
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
        guard !targets.isEmpty || cluster != nil else { return }
        let text = WireJSON.encode(event)
        for t in targets { t.deliver(text) }
        cluster?.publish(keyTag: tag(of: apiKey), text: text)
    }
}

/// One `GET /api/events` socket's subscription. It starts when the upgrade is decided, before the
/// client sees the 101, so an event of a call the client creates right after connecting is never
/// missed; what comes before the socket is ready waits here, in order (at most `maxPending`).
final class EventSubscription: Sendable {
    private struct State {
        var outbox: Outbox?
        var pending: [String] = []
    }
    private let state = NIOLockedValueBox(State())
    static let maxPending = 4096

    func deliver(_ text: String) {
        state.withLockedValue { s in
            if let outbox = s.outbox {
                outbox.send(text: text)
            } else if s.pending.count < Self.maxPending {
                s.pending.append(text)
            }
        }
    }

    /// The socket is ready: what waited goes first.
    func attach(_ outbox: Outbox) {
        state.withLockedValue { s in
            for text in s.pending { outbox.send(text: text) }
            s.pending = []
            s.outbox = outbox
        }
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

import CLibre
import ChamadeMedia

/// One dialog's SDP (libre's `sdp_session` with one audio `m=` line), on the SIP thread only.
///
/// Offers list PCMU, PCMA, Opus and telephone-event at 8 and 48 kHz, ptime 20 (SPEC §6). An
/// answer names exactly the codec chosen (the offerer's first that we have, with its payload
/// type) and the telephone-event at that codec's clock, so the far end cannot switch codecs under
/// the leg.
final class SessionDescription {
    private(set) var session: OpaquePointer?
    private(set) var media: OpaquePointer?

    struct Format {
        var id: String
        var name: String
        var clockRate: UInt32
        var channels: UInt8
        var parameters: String?
    }

    /// What we offer, in order of preference: the room is at 8 kHz (SPEC §6), so G.711 first.
    static let offered: [Format] = [
        Format(id: "0", name: "PCMU", clockRate: 8000, channels: 1),
        Format(id: "8", name: "PCMA", clockRate: 8000, channels: 1),
        Format(id: "111", name: "opus", clockRate: 48000, channels: 2, parameters: "useinbandfec=1"),
        Format(id: "101", name: "telephone-event", clockRate: 8000, channels: 1, parameters: "0-15"),
        Format(id: "110", name: "telephone-event", clockRate: 48000, channels: 1, parameters: "0-15"),
    ]

    /// `local` is where our RTP is (port 0 until a leg's port is known).
    init(local: Endpoint, formats: [Format]) throws(SIPError) {
        var laddr = sa()
        _ = sa_set_str(&laddr, local.host, local.port)
        var err = sdp_session_alloc(&session, &laddr)
        guard err == 0 else { throw .libre(operation: "sdp_session_alloc", code: err) }
        err = sdp_media_add(&media, session, "audio", local.port, "RTP/AVP")
        guard err == 0 else { release(); throw .libre(operation: "sdp_media_add", code: err) }
        for f in formats {
            err = clibre_sdp_format_add(nil, media, false, f.id, f.name, f.clockRate, f.channels, f.parameters)
            guard err == 0 else { release(); throw .libre(operation: "sdp_format_add", code: err) }
        }
        _ = clibre_sdp_media_set_lattr(media, true, "ptime", "20")
    }

    deinit { release() }

    private func release() {
        if let session { _ = mem_deref(UnsafeMutableRawPointer(session)) }
        session = nil
        media = nil
    }

    /// Sets where our RTP is (the leg's port, known at accept or before the offer).
    func setLocal(_ local: Endpoint) {
        var laddr = sa()
        _ = sa_set_str(&laddr, local.host, local.port)
        sdp_session_set_laddr(session, &laddr)
        sdp_media_set_lport(media, local.port)
    }

    /// Reads the far end's description (`offer`: it is an offer; else an answer to ours) from a
    /// SIP message's body.
    func decode(_ body: UnsafeMutablePointer<mbuf>, offer: Bool) -> Bool {
        sdp_decode(session, body, offer) == 0
    }

    /// Reads the far end's description from bytes (a body that did not come through libre's SIP
    /// stack: tests and the SDP fuzz target).
    func decode(bytes: UnsafeRawBufferPointer, offer: Bool) -> Bool {
        guard let mb = mbuf_alloc(max(bytes.count, 1)) else { return false }
        defer { _ = mem_deref(UnsafeMutableRawPointer(mb)) }
        if let base = bytes.baseAddress, mbuf_write_mem(mb, base.assumingMemoryBound(to: UInt8.self), bytes.count) != 0 {
            return false
        }
        mb.pointee.pos = 0
        return decode(mb, offer: offer)
    }

    /// Our description, to send.
    func encode(offer: Bool) -> UnsafeMutablePointer<mbuf>? {
        var mb: UnsafeMutablePointer<mbuf>?
        guard sdp_encode(&mb, session, offer) == 0 else { return nil }
        return mb
    }

    /// The media the far end's decoded description gives: its first audio format we support (its
    /// order: the offerer's preference) and its telephone-event at that codec's clock. Nil: nothing
    /// in common, or no usable address.
    func negotiated() -> SIPMedia? {
        guard let media, let list = sdp_media_format_lst(media, false) else { return nil }
        var chosen: (MediaCodec, Int)?
        var events: [(rate: UInt32, pt: Int)] = []
        var le = list.pointee.head
        while let entry = le {
            if let raw = entry.pointee.data {
                let f = raw.assumingMemoryBound(to: sdp_format.self).pointee
                // A static payload type may come without `a=rtpmap` (RFC 3551): 0 is PCMU, 8 PCMA.
                let named = f.name.map { String(cString: $0).lowercased() } ?? ""
                let name = !named.isEmpty ? named : f.pt == 0 ? "pcmu" : f.pt == 8 ? "pcma" : ""
                let g711Rate = f.srate == 8000 || (named.isEmpty && f.srate == 0)
                if f.sup, (0...127).contains(f.pt) {
                    switch name {
                    case "pcmu" where chosen == nil && g711Rate: chosen = (.pcmu, Int(f.pt))
                    case "pcma" where chosen == nil && g711Rate: chosen = (.pcma, Int(f.pt))
                    case "opus" where chosen == nil && f.srate == 48000: chosen = (.opus, Int(f.pt))
                    case "telephone-event": events.append((f.srate, Int(f.pt)))
                    default: break
                    }
                }
            }
            le = entry.pointee.next
        }
        guard let (codec, pt) = chosen, let raddr = sdp_media_raddr(media), sa_af(raddr) == AF_INET else { return nil }
        // telephone-event at the codec's clock (RFC 4733), else the one offered: Opus peers often
        // list only telephone-event/8000 (baresip then counts its events at 48 kHz anyway).
        let event = events.first { $0.rate == UInt32(codec.clockRate) } ?? events.first
        let port = sdp_media_rport(media)
        let address = UInt32(sa_in(raddr))
        // libre keeps the far end's direction from our side: its `a=sendonly` is SDP_RECVONLY
        // here (we only receive). Our own direction stays sendrecv, and libre's answer is the
        // intersection (recvonly to a sendonly offer, inactive to inactive).
        let dir = sdp_media_rdir(media)
        // An old-style hold (c=0.0.0.0) or port 0 receives nothing.
        let reachable = address != 0 && port != 0
        let ptime = sdp_media_rattr(media, "ptime").flatMap { Int(String(cString: $0)) }
        return SIPMedia(
            codec: codec, payloadType: UInt8(pt),
            telephoneEventPayloadType: event.map { UInt8($0.pt) }, telephoneEventClockRate: event.map { Int($0.rate) },
            remote: Endpoint(address: address, port: port),
            peerSends: dir == SDP_SENDRECV || dir == SDP_RECVONLY,
            peerReceives: reachable && (dir == SDP_SENDRECV || dir == SDP_SENDONLY),
            packetMilliseconds: ptime)
    }

    /// The answer's formats for `media`: the codec and telephone-event as the offer numbered them.
    static func answerFormats(for media: SIPMedia) -> [Format] {
        var formats: [Format] =
            switch media.codec {
            case .pcmu: [Format(id: "\(media.payloadType)", name: "PCMU", clockRate: 8000, channels: 1)]
            case .pcma: [Format(id: "\(media.payloadType)", name: "PCMA", clockRate: 8000, channels: 1)]
            case .opus: [Format(id: "\(media.payloadType)", name: "opus", clockRate: 48000, channels: 2, parameters: "useinbandfec=1")]
            }
        if let te = media.telephoneEventPayloadType {
            let rate = UInt32(media.telephoneEventClockRate ?? media.codec.clockRate)
            formats.append(Format(id: "\(te)", name: "telephone-event", clockRate: rate, channels: 1, parameters: "0-15"))
        }
        return formats
    }
}

#if canImport(Glibc)
import Glibc
#endif

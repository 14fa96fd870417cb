import ChamadeMedia
import ChamadeSIP
import Foundation
import Glibc
import Testing

/// SIPStack against a real SIP peer, SIPp's built-in scenarios: as UAS it answers SIPp's UAC
/// (INVITE with a PCMU offer → 100/180 → 200 → ACK → BYE), as UAC it dials SIPp's UAS (INVITE →
/// 180 → 200 → ACK → our BYE). Events are checked in order; what SIPp received from its message
/// trace.
@Suite struct SIPStackTests {
    enum Observed: Sendable {
        case sip(SIPEvent)
        case sippExited(Int32)
        case timedOut
    }

    @Test func answersAnInboundCall() async throws {
        let (events, sink) = AsyncStream.makeStream(of: Observed.self)
        let stack = SIPStack(configuration: SIPConfiguration(host: "127.0.0.1", port: 0, accepts: { $0 == "service" })) {
            sink.yield(.sip($0))
        }
        let port = try stack.start()
        defer { stack.stop() }
        let rtp = Endpoint(address: 0x7F00_0001, port: try freeUDPPort())
        let sipp = try SIPp(["-sn", "uac", "127.0.0.1:\(port)"], sink: sink)
        defer { sipp.cleanUp() }

        var seen: [String] = []
        var status: Int32?
        loop: for await observed in events {
            switch observed {
            case .sip(.incoming(let call)):
                seen.append("incoming")
                #expect(call.media.codec == .pcmu && call.media.payloadType == 0)
                #expect(call.media.remote.host == "127.0.0.1" && call.media.peerSends && call.media.peerReceives)
                #expect(call.user == "service" && call.caller == "sipp" && call.fromURI.hasPrefix("sip:sipp@"))
                // From this task's thread: the command crosses to the SIP thread through the mqueue.
                try stack.answer(call.id, localRTP: rtp)
            case .sip(.ended(_, let why)):
                seen.append("ended")
                #expect(why == .remoteHangUp)
                if status != nil { break loop }
            case .sip(let other):
                Issue.record("unexpected \(other)")
            case .sippExited(let s):
                status = s
                if s != 0 || seen.last == "ended" { break loop }
            case .timedOut:
                Issue.record("timed out; seen \(seen)")
                break loop
            }
        }
        #expect(status == 0)
        #expect(seen == ["incoming", "ended"])
        let log = try sipp.messages()
        let trying = try #require(log.range(of: "SIP/2.0 100 Trying"))
        let ringing = try #require(log.range(of: "SIP/2.0 180 Ringing"))
        let ok = try #require(log.range(of: "SIP/2.0 200 OK"))
        #expect(trying.lowerBound < ringing.lowerBound && ringing.lowerBound < ok.lowerBound)
        // The answer names our RTP port and only the chosen codec.
        #expect(log.contains("m=audio \(rtp.port) RTP/AVP 0\r\n"))
        #expect(log.contains("CSeq: 2 BYE"))
        let counts = stack.statistics
        #expect(counts.responsesSent[1] == 2 && counts.responsesSent[2] >= 2, "\(counts)")
    }

    @Test func dialsAndHangsUp() async throws {
        let (events, sink) = AsyncStream.makeStream(of: Observed.self)
        let stack = SIPStack(configuration: SIPConfiguration(host: "127.0.0.1", port: 0, accepts: { _ in false })) {
            sink.yield(.sip($0))
        }
        _ = try stack.start()
        defer { stack.stop() }
        let sippPort = try freeUDPPort()
        let sipp = try SIPp(["-sn", "uas"], port: sippPort, sink: sink)
        defer { sipp.cleanUp() }
        try await Task.sleep(for: .milliseconds(300))  // SIPp binds its port
        let rtp = Endpoint(address: 0x7F00_0001, port: try freeUDPPort())
        let id = stack.newDialogID()
        try stack.dial(id, try SIPURI(parsing: "sip:service@127.0.0.1:\(sippPort)"), localRTP: rtp, displayName: "Agent")

        var seen: [String] = []
        var status: Int32?
        loop: for await observed in events {
            switch observed {
            case .sip(.progress(let d, let code)):
                #expect(d == id && code == 180)
                seen.append("180")
            case .sip(.answered(let d, let callID, let media)):
                #expect(d == id && !callID.isEmpty)
                #expect(media.codec == .pcmu && media.payloadType == 0 && media.remote.host == "127.0.0.1")
                seen.append("answered")
                stack.hangUp(id)
            case .sip(let other):
                Issue.record("unexpected \(other)")
            case .sippExited(let s):
                status = s
                break loop
            case .timedOut:
                Issue.record("timed out; seen \(seen)")
                break loop
            }
        }
        #expect(status == 0)
        #expect(seen == ["180", "answered"])
        let log = try sipp.messages()
        // Our offer: every codec, both telephone-events, ptime 20, on our port; then ACK and BYE.
        #expect(log.contains("m=audio \(rtp.port) RTP/AVP 0 8 111 101 110\r\n"))
        #expect(log.contains("a=rtpmap:111 opus/48000/2") && log.contains("a=rtpmap:110 telephone-event/48000"))
        #expect(log.contains("a=ptime:20"))
        #expect(log.contains("From: \"Agent\" <sip:chamade@127.0.0.1:"))
        #expect(log.contains("ACK sip:") && log.contains("BYE sip:"))
    }

    @Test(arguments: [
        ("sip:alice@10.0.0.1", "alice", "10.0.0.1", nil as Int?),
        ("sip:bob@pbx.example.com:5080;transport=udp", "bob", "pbx.example.com", 5080),
        ("SIP:100@127.0.0.1:5062", "100", "127.0.0.1", 5062),
        ("sip:trunk.example", "", "trunk.example", nil),
    ])
    func parsesMeetingURIs(text: String, user: String, host: String, port: Int?) throws {
        let uri = try SIPURI(parsing: text)
        #expect(uri.user == user && uri.host == host && uri.port == port)
    }

    @Test(arguments: ["", "sip:", "tel:+123", "sip:a@", "sip:a@host:0", "sip:a@host:99999", "sip:a@[::1]", "sip:a b@host", "sip:@host", "sip:a@ho_st"])
    func refusesBadMeetingURIs(text: String) {
        #expect(throws: SIPURI.Invalid.self) { try SIPURI(parsing: text) }
    }
}

/// SIPp in a temporary folder, its exit reported to `sink` (and a watchdog's `.timedOut`).
final class SIPp: @unchecked Sendable {
    let process = Process()
    let folder: URL
    private let watchdog: Task<Void, Never>

    init(_ arguments: [String], port: UInt16? = nil, sink: AsyncStream<SIPStackTests.Observed>.Continuation) throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sipp-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sipp")
        process.currentDirectoryURL = folder
        process.arguments = arguments + [
            "-m", "1", "-i", "127.0.0.1", "-p", "\(try port ?? freeUDPPort())", "-mp", "\(try freeUDPPort())",
            "-nostdin", "-timeout", "20", "-timeout_error", "-trace_msg",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.terminationHandler = { sink.yield(.sippExited($0.terminationStatus)) }
        try process.run()
        watchdog = Task {
            try? await Task.sleep(for: .seconds(30))
            if !Task.isCancelled { sink.yield(.timedOut) }
        }
    }

    /// SIPp's message trace.
    func messages() throws -> String {
        let logs = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix("_messages.log") }
        return try String(contentsOf: folder.appendingPathComponent(try #require(logs.first)), encoding: .utf8)
    }

    func cleanUp() {
        watchdog.cancel()
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: folder)
    }
}

/// A UDP port free right now on 127.0.0.1 (bind to 0, read it, close).
func freeUDPPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
        }
    }
    guard ok else { throw POSIXError(.EADDRINUSE) }
    return UInt16(bigEndian: addr.sin_port)
}

import ChamadeSIP
import Foundation
import Glibc
import Testing

/// SIPStack against a real SIP peer: SIPp's built-in UAC scenario (INVITE with a PCMU offer,
/// expects 100/180 optionally then 200, sends ACK, pauses, sends BYE, expects 200).
@Suite struct SIPStackTests {
    enum Observed: Sendable {
        case sip(SIPEvent)
        case sippExited(Int32)
        case timedOut
    }

    @Test func answersSIPpUAC() async throws {
        let sippPath = "/usr/bin/sipp"
        try #require(FileManager.default.isExecutableFile(atPath: sippPath), "install sip-tester")
        let (events, sink) = AsyncStream.makeStream(of: Observed.self)
        let rtpPort = try freeUDPPort()
        let stack = SIPStack(host: "127.0.0.1", port: 0, rtpPort: rtpPort) { sink.yield(.sip($0)) }
        let port = try stack.start()
        defer { stack.stop() }
        #expect(port != 0)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sipp-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sipp = Process()
        sipp.executableURL = URL(fileURLWithPath: sippPath)
        sipp.currentDirectoryURL = dir
        sipp.arguments = [
            "-sn", "uac", "127.0.0.1:\(port)", "-m", "1", "-i", "127.0.0.1",
            "-p", "\(try freeUDPPort())", "-mp", "\(try freeUDPPort())",
            "-nostdin", "-timeout", "20", "-timeout_error", "-trace_msg",
        ]
        sipp.standardOutput = FileHandle.nullDevice
        sipp.standardError = FileHandle.nullDevice
        sipp.terminationHandler = { sink.yield(.sippExited($0.terminationStatus)) }
        let start = ContinuousClock.now
        try sipp.run()
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            sink.yield(.timedOut)
        }
        defer { watchdog.cancel() }

        var seen: [String] = []
        var sippStatus: Int32?
        var inviteToACK: Duration?
        loop: for await observed in events {
            switch observed {
            case .sip(.invite(let invite)):
                seen.append("INVITE")
                #expect(invite.codec == "PCMU")
                #expect(invite.payloadType == 0)
                #expect(invite.remoteRTP.hasPrefix("127.0.0.1:"))
                #expect(invite.toUser == "service")
                // Answered from this task's thread: the command crosses to the SIP thread via mqueue.
                try stack.answer(callID: invite.callID)
            case .sip(.established):
                seen.append("ACK")
                inviteToACK = ContinuousClock.now - start
            case .sip(.closed(_, let byRemote, let code)):
                seen.append("BYE")
                #expect(byRemote)
                #expect(code == ECONNRESET)  // libre closes a session ended by BYE with ECONNRESET
                if sippStatus != nil { break loop }
            case .sippExited(let status):
                sippStatus = status
                if status != 0 || seen.last == "BYE" { break loop }
            case .timedOut:
                Issue.record("timed out; seen \(seen)")
                sipp.terminate()
                break loop
            }
        }
        #expect(sippStatus == 0)
        #expect(seen == ["INVITE", "ACK", "BYE"])
        if let inviteToACK { print("SIPp run: start to ACK \(inviteToACK)") }

        // What SIPp received (its -trace_msg log): 100 and 180 before the 200, whose SDP answers PCMU
        // on our RTP port; the 200 to its BYE.
        let logs = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix("_messages.log") }
        let log = try String(contentsOf: dir.appendingPathComponent(try #require(logs.first)), encoding: .utf8)
        let trying = try #require(log.range(of: "SIP/2.0 100 Trying"))
        let ringing = try #require(log.range(of: "SIP/2.0 180 Ringing"))
        let ok = try #require(log.range(of: "SIP/2.0 200 OK"))
        #expect(trying.lowerBound < ringing.lowerBound && ringing.lowerBound < ok.lowerBound)
        #expect(log.contains("m=audio \(rtpPort) RTP/AVP 0"))
        #expect(log.contains("a=rtpmap:0 PCMU/8000"))
        #expect(log.contains("CSeq: 2 BYE"))
        if ProcessInfo.processInfo.environment["CHAMADE_SIP_TRACE"] != nil { print(log) }
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

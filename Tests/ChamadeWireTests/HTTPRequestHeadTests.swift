import ChamadeWire
import Testing

private func check(_ text: String) -> Result<HTTPRequestHead, HTTPRequestHead.Refusal> {
    Array(text.utf8).withUnsafeBytes { raw in
        Result { () throws(HTTPRequestHead.Refusal) in try HTTPRequestHead(parsing: raw, maxBodyBytes: 1 << 20) }
    }
}

private func status(_ text: String) -> Int? {
    if case .failure(let r) = check(text) { return r.status }
    return nil
}

@Suite struct HTTPRequestHeadTests {
    @Test func acceptsWhatClientsSend() throws {
        let get = try check("GET /healthz HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").get()
        #expect(get.method == "GET" && get.body == .none && !get.closesAfterResponse && !get.isUpgrade)
        let post = try check("POST /api/call HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n").get()
        #expect(post.body == .length(12))
        #expect(try check("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").get().body == .chunked)
        #expect(try check("GET / HTTP/1.0\r\n\r\n").get().closesAfterResponse)
        #expect(try !check("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").get().closesAfterResponse)
        let ws = try check(
            "GET /api/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).get()
        #expect(ws.isUpgrade)
    }

    @Test func refusesEachMalformedHeadWithItsStatus() {
        let cases: [(String, Int)] = [
            ("GET /a\u{1}b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET /healthz HTTP/1.1\nHost: x\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
            ("PRI * HTTP/2.0\r\n\r\n", 505),
            ("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        ]
        for (text, expected) in cases { #expect(status(text) == expected, "\(text.debugDescription)") }
    }
}

import ChamadeWire
import FuzzSupport

// The server's own check of HTTP/1.1 request heads (SPEC §9), on any bytes: it accepts or refuses
// with one of the contract's statuses, and what it accepts is what it promises — a known method, a
// body length within the limit, CRLF lines only.

private let statuses: Set<Int> = [400, 413, 501, 505]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let bytes = FuzzInput(data, count).bytes
    do throws(HTTPRequestHead.Refusal) {
        let head = try HTTPRequestHead(parsing: bytes, maxBodyBytes: 1 << 20)
        fuzzCheck(HTTPRequestHead.methods.contains(head.method), "accepted method \(head.method)")
        if case .length(let n) = head.body { fuzzCheck(n > 0 && n <= 1 << 20, "accepted length \(n)") }
        fuzzCheck(bytes.count >= 4 && Array(bytes.suffix(4)) == [13, 10, 13, 10], "accepted a head not ending in CRLFCRLF")
        for i in 0..<bytes.count where bytes[i] == 10 { fuzzCheck(i > 0 && bytes[i - 1] == 13, "accepted a bare LF") }
    } catch {
        fuzzCheck(statuses.contains(error.status), "refused with status \(error.status)")
        fuzzCheck(!error.code.isEmpty && !error.message.isEmpty, "refusal without code or words")
    }
    return 0
}

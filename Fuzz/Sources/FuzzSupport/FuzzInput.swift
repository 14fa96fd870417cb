/// Reads structured values off a fuzzer's bytes: a target that needs numbers (sequence numbers,
/// chunk sizes) takes them from the front, so libFuzzer's mutations steer the structure too.
/// Past the end, every read gives 0.
public struct FuzzInput {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ data: UnsafePointer<UInt8>?, _ count: Int) {
        bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count)
    }

    public var isAtEnd: Bool { offset >= bytes.count }
    public var remaining: Int { max(0, bytes.count - offset) }

    public mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T {
        var v: T = 0
        for _ in 0..<MemoryLayout<T>.size {
            v = v << 8 | T(offset < bytes.count ? bytes[offset] : 0)
            offset += 1
        }
        return v
    }

    public mutating func bool() -> Bool { integer(UInt8.self) & 1 == 1 }

    /// The next `count` bytes (fewer at the end).
    public mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let start = min(offset, bytes.count)
        let end = min(bytes.count, start + max(0, count))
        offset = end
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// Everything left.
    public mutating func rest() -> UnsafeRawBufferPointer { take(remaining) }
}

/// A check a fuzz target makes on what a parser gave back: a failure is a crash libFuzzer keeps.
@inline(__always)
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ what: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError("fuzz invariant: \(what())", file: file, line: line) }
}

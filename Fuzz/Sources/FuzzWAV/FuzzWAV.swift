import ChamadeAudioFile
import FuzzSupport

#if canImport(Glibc)
import Glibc
#endif

// Reading any file as audio (`chamade replay`, fixtures): libsndfile opens it from a file in
// /dev/shm, and our reader mixes it down to mono. Whatever the header claims, reading stops at
// the end or with a typed error, never past the buffer.

private let path = "/dev/shm/chamade-fuzz-wav-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let bytes = FuzzInput(data, count).bytes
    let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o600)
    guard fd >= 0 else { fatalError("cannot write \(path)") }
    if let base = bytes.baseAddress { _ = write(fd, base, bytes.count) }
    close(fd)
    defer { unlink(path) }
    guard var reader = try? AudioFile.Reader(path: path) else { return 0 }
    fuzzCheck(reader.sampleRate > 0 && reader.channelCount > 0, "opened without a rate or a channel")
    var buffer = [Int16](repeating: 0, count: 1024)
    var total = 0
    // A header may claim billions of frames over a few bytes of data: stop at 1 M samples.
    while total < 1 << 20 {
        guard let n = try? buffer.withUnsafeMutableBufferPointer({ try reader.read(into: $0) }) else { break }
        fuzzCheck(n >= 0 && n <= buffer.count, "read \(n) into \(buffer.count)")
        if n == 0 { break }
        total += n
    }
    return 0
}

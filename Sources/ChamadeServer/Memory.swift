import CChamadeShims

/// How the server keeps its footprint down (SPEC §9: after every call has ended, resident memory
/// within 50 MB of idle, however many agents were connected).
///
/// Measured here: after a 500-agent run the idle server kept 1.6–1.8 GB resident. Each agent's
/// playout ring is 5.8 MB at 48 kHz; glibc maps the first such block on its own, but freeing it
/// raises the dynamic mmap threshold past 5.8 MB, so every later ring came from the heap and the
/// heap kept the pages. A fixed threshold keeps every large buffer in its own mapping, returned to
/// the system when freed; `trim` gives back what the smaller allocations of many connections
/// (frames, buffers of every event loop's arena) left free.
enum Memory {
    /// Blocks from this size up get their own mapping.
    static let mmapThresholdBytes = 256 << 10

    static func configure() { cchamade_set_mmap_threshold(Int32(mmapThresholdBytes)) }

    static func trim() { cchamade_malloc_trim() }
}

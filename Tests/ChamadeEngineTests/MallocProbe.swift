import CChamadeShims

/// Checks the malloc counter itself: allocations made on this thread while its tick flag is raised
/// are counted (so a zero in `tickAllocatesNothing` means something).
enum MallocProbe {
    static func allocationsWhileFlagged() -> UInt64 {
        let before = cchamade_tick_allocation_count_on_this_thread()
        cchamade_tick_enter()
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 100)
        cchamade_tick_exit()
        p.deallocate()
        return cchamade_tick_allocation_count_on_this_thread() - before
    }
}

import Foundation

/// The process's own footprint, as Prometheus's standard `process_*` metrics name it: what a soak
/// watches for drift (SPEC §9) and an operator alerts on. Read from /proc at scrape time, on the
/// scraping thread; absent (nil) where /proc is not there.
struct ProcessStatistics {
    var residentBytes: Int
    var threads: Int
    var openFileDescriptors: Int
    /// User plus system CPU time since start.
    var cpuSeconds: Double

    static func current() -> ProcessStatistics? {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
            let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        else { return nil }
        let pages = statm.split(separator: " ")
        // stat: "pid (comm) state …"; comm may hold spaces, so fields are counted after its ')'.
        guard pages.count > 1, let resident = Int(pages[1]), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the comm: state is field 3 of proc(5); utime 14, stime 15, num_threads 20.
        func field(_ n: Int) -> Int? { fields.count > n - 3 ? Int(fields[n - 3]) : nil }
        guard let utime = field(14), let stime = field(15), let threads = field(20) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProcessStatistics(
            residentBytes: resident * Int(sysconf(Int32(_SC_PAGESIZE))), threads: threads,
            // The directory listing itself holds one descriptor open while it reads.
            openFileDescriptors: max(0, fds.count - 1), cpuSeconds: Double(utime + stime) / ticks)
    }
}

import CheckpointImage
import LinuxKernel

// MARK: Timing

/// Seconds on the monotonic clock (clock_gettime(CLOCK_MONOTONIC)).
func now() -> Double { Double(MonotonicClock.now()) / 1e9 }

/// One thing timed: `prepare` and `check` run before and after `body`, untimed.
final class Measurement {
    let name: String
    let prepare: () throws -> Void
    let body: () throws -> Void
    let check: () throws -> Void
    var times: [Double] = []
    var best: Double { times.min()! }

    init(_ name: String, prepare: @escaping () throws -> Void = {}, check: @escaping () throws -> Void = {},
         _ body: @escaping () throws -> Void) {
        self.name = name
        self.prepare = prepare
        self.body = body
        self.check = check
    }
}

/// Runs the measurements round-robin: a warm-up round, then `runs` rounds of
/// each measurement once, with `sync` before each. Interleaving them means
/// that load from other processes on the machine hits them all alike.
func runRounds(_ measurements: [Measurement], runs: Int) throws {
    for round in 0...runs {
        log(round == 0 ? "  warm-up:" : "  round \(round):", newline: false)
        for m in measurements {
            try m.prepare()
            FileSystem.syncAll()
            let start = now()
            try m.body()
            let elapsed = now() - start
            try m.check()
            if round > 0 { m.times.append(elapsed) }
            log(" \(f(elapsed, 3))", newline: false)
        }
        log("")
    }
}

/// CPU time of the whole machine (from /proc/stat) and of this process with
/// its children, to tell how busy other processes kept the machine.
struct CPUSample {
    /// Seconds all CPUs spent busy, and stolen by the hypervisor.
    var busy = 0.0, steal = 0.0
    /// Seconds this process and its waited-for children (zstd) used.
    var own = 0.0
    var wall = now()

    static func take() -> CPUSample {
        var sample = CPUSample()
        let hz = Double(Host.clockTicksPerSecond)
        if let bytes = try? FileSystem.readFile("/proc/stat"),
           let line = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) {
            // cpu user nice system idle iowait irq softirq steal ...
            let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if ticks.count >= 8 {
                sample.busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz
                sample.steal = ticks[7] / hz
            }
        }
        sample.own = Host.processorSeconds()
        return sample
    }
}

/// Progress, on standard error.
func log(_ message: String, newline: Bool = true) {
    // The report so far went to standard output unbuffered (``out(_:)``), so it comes first.
    StandardStream.error.write(message + (newline ? "\n" : ""))
}

/// A line of the report, on standard output (write(2), unbuffered).
func out(_ line: String) {
    StandardStream.output.write(line + "\n")
}


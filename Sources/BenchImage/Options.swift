import CheckpointImage
import LinuxKernel

// MARK: Options

struct Options {
    var sizeMiB = 1024
    var directory = ""
    var runs = 3
    /// Percentages of zero, text-like and random pages.
    var mix = (zero: 40, text: 40, random: 20)
    /// Leaves the files in the directory (for looking at them with zstd or ccimg).
    var keep = false
    var seed: UInt64 = 0xC0FF_EE00_BE7C_4A9E

    static let usage = "usage: bench-image --dir DIR [--size MiB] [--runs N] [--mix ZERO,TEXT,RANDOM] [--keep]"

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ name: String) throws -> String {
            guard let v = rest.popFirst() else { throw BenchError("\(name) needs a value\n\(usage)") }
            return v
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--size":
                guard let n = Int(try value(argument)), n > 0 else { throw BenchError("--size needs a positive number of MiB") }
                options.sizeMiB = n
            case "--dir": options.directory = try value(argument)
            case "--runs":
                guard let n = Int(try value(argument)), n > 0 else { throw BenchError("--runs needs a positive number") }
                options.runs = n
            case "--mix":
                let parts = try value(argument).split(separator: ",").compactMap { Int($0) }
                guard parts.count == 3, parts.allSatisfy({ $0 >= 0 }), parts.reduce(0, +) == 100 else {
                    throw BenchError("--mix needs three percentages adding up to 100, such as 40,40,20")
                }
                options.mix = (parts[0], parts[1], parts[2])
            case "--keep": options.keep = true
            case "-h", "--help":
                StandardStream.output.write(usage + "\n")
                Host.exit(0)
            default: throw BenchError("unknown argument \(argument)\n\(usage)")
            }
        }
        guard !options.directory.isEmpty else { throw BenchError("--dir is required\n\(usage)") }
        return options
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}


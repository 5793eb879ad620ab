// MARK: Synthetic memory

/// SplitMix64: small, fast and the same on every machine.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A number in 0..<n (n small; the modulo bias does not matter here).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

enum PageKind: Int, CaseIterable {
    case zero, text, random
    var name: String { ["zero", "text", "random"][rawValue] }
}

/// Process memory held in RAM, page aligned; freed by ``deallocate()``.
struct SyntheticMemory {
    static let pageSize = 4096
    let bytes: UnsafeMutableRawBufferPointer
    var pageCounts: [PageKind: Int] = [:]
    var pageCount: Int { bytes.count / SyntheticMemory.pageSize }

    /// Tokens of the text-like pages: English, identifiers, paths, JSON keys.
    /// Picked with a skew towards the front, as word frequencies are.
    static let vocabulary: [[UInt8]] = """
    the of and to in is for that on with as by it this be are from at or an not was process thread memory \
    checkpoint restore image page frame section index error return value size count offset length buffer \
    result status request response user name id type data key time file path config server client socket \
    handle signal state true false null self let var func struct class enum case default if else while \
    guard throw try catch import public private static final override init deinit async await Int UInt64 \
    String Array Dictionary Optional http://example.com/api/v1 /usr/lib/x86_64-linux-gnu/libc.so.6 \
    "timestamp": "level": "message": "trace_id": INFO WARN DEBUG {"id": [], {}, (), ->, ==, !=, &&, ||, \
    += 0x7ffd4a3c 0x55555555 connection established closed timeout retry attempt payload header footer \
    compress decompress checksum verify mismatch allocate release lock unlock wait notify queue worker
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { Array($0.utf8) }

    /// Generates `sizeMiB` of memory: page kinds in runs of 1 to 128 pages,
    /// chosen with weights equal to the pages of each kind still to place, so
    /// the mix comes out exact.
    static func generate(sizeMiB: Int, mix: (zero: Int, text: Int, random: Int), seed: UInt64) -> SyntheticMemory {
        let pages = sizeMiB * (1 << 20) / pageSize
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: pages * pageSize, alignment: pageSize)
        var memory = SyntheticMemory(bytes: bytes)
        var rng = SplitMix64(seed: seed)
        var left = [pages * mix.zero / 100, pages * mix.text / 100, 0]
        left[2] = pages - left[0] - left[1]
        var text = TextStream()
        var page = 0
        while page < pages {
            let total = left.reduce(0, +)
            var pick = rng.below(total)
            var kind = 0
            while pick >= left[kind] {
                pick -= left[kind]
                kind += 1
            }
            // Run lengths spread over 1...128, short runs the most common.
            let span = 1 << rng.below(8)
            let run = min(left[kind], 1 + rng.below(span))
            for _ in 0..<run {
                let target = UnsafeMutableRawBufferPointer(rebasing: bytes[(page * pageSize)..<((page + 1) * pageSize)])
                switch PageKind(rawValue: kind)! {
                case .zero: target.initializeMemory(as: UInt8.self, repeating: 0)
                case .text: text.fill(target, &rng)
                case .random:
                    for i in stride(from: 0, to: pageSize, by: 8) { target.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self) }
                }
                page += 1
            }
            left[kind] -= run
            memory.pageCounts[PageKind(rawValue: kind)!, default: 0] += run
        }
        return memory
    }

    func deallocate() { bytes.deallocate() }
}

/// Text like a log or source file: indented lines of tokens and numbers,
/// half of them starting like one of the last few lines (as log lines and
/// code do) and ending differently. One stream runs through all text pages,
/// cut at page boundaries.
struct TextStream {
    private var pending: [UInt8] = []
    private var recent: [[UInt8]] = []

    mutating func fill(_ page: UnsafeMutableRawBufferPointer, _ rng: inout SplitMix64) {
        var filled = 0
        while filled < page.count {
            if pending.isEmpty { pending = nextLine(&rng) }
            let n = min(pending.count, page.count - filled)
            pending.withUnsafeBytes { page.baseAddress!.advanced(by: filled).copyMemory(from: $0.baseAddress!, byteCount: n) }
            pending.removeFirst(n)
            filled += n
        }
    }

    private mutating func nextLine(_ rng: inout SplitMix64) -> [UInt8] {
        var line: [UInt8]
        if recent.count == 32 && rng.below(2) == 0 {
            // The start of a recent line, up to one of its spaces, then new tokens.
            let model = recent[rng.below(recent.count)]
            let spaces = model.indices.filter { model[$0] == 0x20 }.suffix(3)
            let cut = spaces.isEmpty ? 0 : spaces[spaces.startIndex + rng.below(spaces.count)]
            line = Array(model[..<cut])
            TextStream.appendTokens(&line, count: 1 + rng.below(3), &rng)
        } else {
            line = [UInt8](repeating: 0x20, count: 2 * rng.below(6))
            TextStream.appendTokens(&line, count: 3 + rng.below(10), &rng)
        }
        line.append(0x0A)
        if recent.count < 32 { recent.append(line) } else { recent[rng.below(32)] = line }
        return line
    }

    static func appendTokens(_ out: inout [UInt8], count: Int, _ rng: inout SplitMix64) {
        let words = SyntheticMemory.vocabulary
        let n = words.count
        for _ in 0..<count {
            if !out.isEmpty && out.last != 0x20 { out.append(rng.below(8) == 0 ? 0x2C : 0x20) }
            if rng.below(12) == 0 {
                out += Array(String(rng.below(1000)).utf8)
            } else {
                // Product of uniform picks: small indices (common words) come up most.
                out += words[rng.below(n) * (1 + rng.below(n)) / n]
            }
        }
    }
}


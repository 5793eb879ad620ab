@testable import CheckpointRestore
@testable import LinuxKernel
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Reading a vdso's exported functions and the jumps that redirect one vdso to another
/// (``VdsoProxy``), on the real vdso of this test process.
@Suite struct VdsoProxyTests {
    /// This process's vdso: its address (AT_SYSINFO_EHDR in /proc/self/auxv) and its bytes,
    /// as long as its mapping in /proc/self/maps.
    static func ownVdso() throws -> (base: UInt64, bytes: [UInt8]) {
        let auxv = try ProcFS.readRaw("/proc/self/auxv")
        let pairs = stride(from: 0, to: auxv.count - 15, by: 16).map { (le(auxv, $0, 8), le(auxv, $0 + 8, 8)) }
        let base = UInt64(try #require(pairs.first { $0.0 == 33 }?.1, "no AT_SYSINFO_EHDR in /proc/self/auxv"))
        let vdso = try #require(ProcFS.parseMaps(try ProcFS.read("/proc/self/maps")).first { $0.path == "[vdso]" })
        try #require(vdso.start == base, "[vdso] at \(String(vdso.start, radix: 16)), AT_SYSINFO_EHDR \(String(base, radix: 16))")
        let pointer = try #require(UnsafeRawPointer(bitPattern: UInt(base)))
        return (base, Array(UnsafeRawBufferPointer(start: pointer, count: Int(vdso.end - base))))
    }

    /// The address the dynamic loader gives `symbol` of linux-vdso.so.1.
    static func loaderAddress(_ symbol: String) -> UInt64? {
        guard let handle = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD) else { return nil }
        defer { dlclose(handle) }
        return dlsym(handle, symbol).map { UInt64(UInt(bitPattern: $0)) }
    }

    @Test("the exported functions are the ones the dynamic loader finds, at the same offsets")
    func functionsMatchTheLoader() throws {
        let vdso = try Self.ownVdso()
        let functions = try VdsoProxy.functions(of: vdso.bytes)
        for name in ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu", "__vdso_clock_getres"] {
            let function = try #require(functions[name], "\(name) in \(functions.keys.sorted())")
            #expect(function.offset + function.size <= UInt64(vdso.bytes.count), "\(name)")
            #expect(function.size >= 14, "\(name) is \(function.size) bytes")
            let address = try #require(Self.loaderAddress(name), "dlsym(linux-vdso.so.1, \(name))")
            #expect(vdso.base + function.offset == address, "\(name)")
        }
        // The unprefixed (weak) aliases name the same code.
        for name in ["clock_gettime", "gettimeofday", "time", "getcpu"] {
            #expect(functions[name]?.offset == functions["__vdso_" + name]?.offset, "\(name)")
            #expect(functions[name] != nil, "\(name)")
        }
    }

    @Test("patches from this vdso onto itself are jumps to their own addresses, one per function address")
    func patchesOntoItself() throws {
        let vdso = try Self.ownVdso()
        let functions = try VdsoProxy.functions(of: vdso.bytes)
        let patches = try VdsoProxy.patches(old: vdso.bytes, oldBase: vdso.base, new: vdso.bytes, newBase: vdso.base)
        #expect(patches.count == Set(functions.values.map(\.offset)).count)
        #expect(Set(patches.map(\.address)).count == patches.count, "one patch per address")
        for patch in patches {
            #expect(patch.bytes.count == 14)
            #expect(Array(patch.bytes.prefix(6)) == [0xff, 0x25, 0, 0, 0, 0], "jmp *0(%rip)")
            #expect(Self.target(patch.bytes) == patch.address, "a jump from \(String(patch.address, radix: 16)) to itself")
            #expect(functions.values.contains { vdso.base + $0.offset == patch.address })
        }
        let clock = try #require(functions["__vdso_clock_gettime"])
        #expect(patches.contains { $0.address == vdso.base + clock.offset })
    }

    @Test("onto a vdso at another address, each jump goes to the same function there")
    func patchesOntoAnotherAddress() throws {
        let vdso = try Self.ownVdso()
        let moved = vdso.base + 0x7_0000_0000
        let functions = try VdsoProxy.functions(of: vdso.bytes)
        let patches = try VdsoProxy.patches(old: vdso.bytes, oldBase: vdso.base, new: vdso.bytes, newBase: moved)
        for patch in patches {
            #expect(Self.target(patch.bytes) == patch.address - vdso.base + moved)
        }
        let time = try #require(functions["__vdso_time"])
        let patch = try #require(patches.first { $0.address == vdso.base + time.offset })
        #expect(Self.target(patch.bytes) == moved + time.offset)
    }

    @Test("a function shorter than the 14-byte jump is refused, not overwritten past its end")
    func shortFunctionRefused() throws {
        var bytes = try Self.ownVdso().bytes
        Self.setDynamicSymbolSizes(&bytes, to: 4)
        #expect(try VdsoProxy.functions(of: bytes).values.allSatisfy { $0.size == 4 })
        #expect { try VdsoProxy.patches(old: bytes, oldBase: 0x1000, new: bytes, newBase: 0x2000) } throws: { error in
            (error as? RestoreError)?.code == .incompatible && "\(error)".contains("too short")
        }
        // A size of 0 (unknown) is taken as long enough.
        Self.setDynamicSymbolSizes(&bytes, to: 0)
        #expect(try !VdsoProxy.patches(old: bytes, oldBase: 0x1000, new: bytes, newBase: 0x2000).isEmpty)
    }

    @Test("bytes that are not a vdso are refused as incompatible, whatever is damaged")
    func damagedVdsoRefused() throws {
        let good = try Self.ownVdso().bytes
        func refused(_ bytes: [UInt8], _ what: String) {
            #expect(throws: RestoreError.self, "\(what)") { _ = try VdsoProxy.functions(of: bytes) }
            #expect((try? VdsoProxy.patches(old: bytes, oldBase: 0, new: good, newBase: 0)) == nil, "\(what)")
        }
        refused([], "empty")
        refused(Array(good.prefix(63)), "shorter than an ELF header")
        refused(Array(good.prefix(64)), "the header alone")
        var notELF = good
        notELF[0] = 0
        refused(notELF, "no ELF magic")
        var elf32 = good
        elf32[4] = 1
        refused(elf32, "a 32-bit ELF class")
        var farSections = good
        withUnsafeBytes(of: UInt64(0xffff_ffff_ffff_ff00).littleEndian) { farSections.replaceSubrange(40..<48, with: $0) }
        refused(farSections, "section headers past the end (offset overflow)")
        var noSymbols = good
        Self.forEachSection(noSymbols) { at, type in if type == 11 { noSymbols[at + 4] = 0 } }   // SHT_DYNSYM → SHT_NULL
        refused(noSymbols, "no dynamic symbol table")
        // Damage anywhere may give fewer functions, never a crash or a read out of bounds.
        for at in stride(from: 0, to: good.count, by: 97) {
            var damaged = good
            damaged[at] ^= 0xff
            _ = try? VdsoProxy.functions(of: damaged)
        }
    }

    // MARK: ELF helpers (section headers of a 64-bit little-endian object)

    static func target(_ jump: [UInt8]) -> UInt64 {
        jump[6..<14].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    static func le(_ bytes: [UInt8], _ at: Int, _ count: Int) -> Int {
        (0..<count).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) }
    }

    /// Calls `body` with each section header's offset and type.
    static func forEachSection(_ bytes: [UInt8], _ body: (Int, Int) -> Void) {
        let shoff = le(bytes, 40, 8), shentsize = le(bytes, 58, 2), shnum = le(bytes, 60, 2)
        for i in 0..<shnum { body(shoff + i * shentsize, le(bytes, shoff + i * shentsize + 4, 4)) }
    }

    /// Sets st_size of every symbol in the dynamic symbol table.
    static func setDynamicSymbolSizes(_ bytes: inout [UInt8], to size: UInt64) {
        var tables: [(offset: Int, size: Int)] = []
        forEachSection(bytes) { at, type in if type == 11 { tables.append((le(bytes, at + 24, 8), le(bytes, at + 32, 8))) } }
        for table in tables {
            for symbol in stride(from: table.offset, to: table.offset + table.size, by: 24) {
                withUnsafeBytes(of: size.littleEndian) { bytes.replaceSubrange(symbol + 16..<symbol + 24, with: $0) }
            }
        }
    }
}

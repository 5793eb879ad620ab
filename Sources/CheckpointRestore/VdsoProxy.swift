import CheckpointImage

/// Restoring on a kernel whose vdso differs (spec/decisions/0009): the image's
/// own vdso pages go back at their saved address, and each function it exports
/// is overwritten with a jump to the same function of this kernel's vdso — so
/// pointers the program resolved into the old vdso (glibc keeps them) still
/// work. This is what CRIU does; the new vdso and its vvar stay where this
/// kernel put them.
struct VdsoProxy {
    /// The exported functions of a vdso image: name → offset from its start.
    static func functions(of image: [UInt8]) throws(RestoreError) -> [String: (offset: UInt64, size: UInt64)] {
        let elf = ElfBytes(image)
        do throws(ElfBytes.Malformed) {
            guard image.count >= 64, image[0..<4].elementsEqual([0x7f, 0x45, 0x4c, 0x46]), image[4] == 2 else {
                throw ElfBytes.Malformed()
            }
            // The address the first PT_LOAD maps at the start of the image.
            let phoff = try elf.u64(32), phentsize = try elf.u16(54), phnum = try elf.u16(56)
            var base: UInt64? = nil
            for i in 0..<UInt64(min(phnum, 64)) {
                let ph = try elf.offset(phoff, plus: i * UInt64(phentsize))
                if try elf.u32(ph) == 1 { base = try elf.u64(ph + 16); break }     // PT_LOAD: p_vaddr
            }
            let shoff = try elf.u64(40), shentsize = try elf.u16(58), shnum = try elf.u16(60)
            var result: [String: (UInt64, UInt64)] = [:]
            for i in 0..<UInt64(min(shnum, 256)) {
                let sh = try elf.offset(shoff, plus: i * UInt64(shentsize))
                guard try elf.u32(sh + 4) == 11 else { continue }                 // SHT_DYNSYM
                let symbols = try elf.u64(sh + 24), size = try elf.u64(sh + 32), link = try elf.u32(sh + 40)
                let strtab = try elf.u64(try elf.offset(shoff, plus: UInt64(link) * UInt64(shentsize)) + 24)
                for s in 0..<min(size / 24, 4096) {
                    let sym = try elf.offset(symbols, plus: s * 24)
                    let info = try elf.u8(sym + 4), shndx = try elf.u16(sym + 6)
                    guard info & 0xf == 2, info >> 4 != 0, shndx != 0 else { continue }   // STT_FUNC, not local, defined
                    let name = try elf.string(at: try elf.offset(strtab, plus: UInt64(try elf.u32(sym))))
                    let value = try elf.u64(sym + 8)
                    guard let base, value >= base else { continue }
                    result[name] = (value - base, try elf.u64(sym + 16))
                }
            }
            guard !result.isEmpty else { throw ElfBytes.Malformed() }
            return result
        } catch {
            throw RestoreError(.incompatible, "the image's vdso cannot be read as an ELF object with exported functions; it cannot be redirected to this kernel's")
        }
    }

    /// The patches that send every old function to its new counterpart: at old
    /// address, `jmp *0(%rip)` followed by the new absolute address (14 bytes).
    static func patches(old: [UInt8], oldBase: UInt64, new: [UInt8], newBase: UInt64) throws(RestoreError) -> [(address: UInt64, bytes: [UInt8])] {
        let oldFunctions = try functions(of: old), newFunctions = try functions(of: new)
        var seen = Set<UInt64>()
        var result: [(UInt64, [UInt8])] = []
        for (name, function) in oldFunctions.sorted(by: { $0.key < $1.key }) {
            guard let target = newFunctions[name], seen.insert(function.offset).inserted else { continue }
            guard function.size == 0 || function.size >= 14, function.offset + 14 <= UInt64(old.count) else {
                throw RestoreError(.incompatible, "the image's vdso function \(name) is too short (\(function.size) bytes) to redirect")
            }
            var bytes: [UInt8] = [0xff, 0x25, 0, 0, 0, 0]
            withUnsafeBytes(of: (newBase + target.offset).littleEndian) { bytes += $0 }
            result.append((oldBase + function.offset, bytes))
        }
        return result
    }
}

/// Bounds-checked little-endian reads of an ELF image held in memory.
struct ElfBytes {
    struct Malformed: Error {}
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func offset(_ a: UInt64, plus b: UInt64) throws(Malformed) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        guard !overflow, sum < UInt64(bytes.count) else { throw Malformed() }
        return sum
    }
    private func field(_ at: UInt64, _ width: Int) throws(Malformed) -> UInt64 {
        guard at <= UInt64(bytes.count), UInt64(bytes.count) - at >= UInt64(width) else { throw Malformed() }
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(bytes[Int(at) + i]) }
        return v
    }
    func u8(_ at: UInt64) throws(Malformed) -> UInt8 { UInt8(try field(at, 1)) }
    func u16(_ at: UInt64) throws(Malformed) -> UInt16 { UInt16(try field(at, 2)) }
    func u32(_ at: UInt64) throws(Malformed) -> UInt32 { UInt32(try field(at, 4)) }
    func u64(_ at: UInt64) throws(Malformed) -> UInt64 { try field(at, 8) }
    func string(at: UInt64) throws(Malformed) -> String {
        var end = Int(at)
        while end < bytes.count, bytes[end] != 0, end - Int(at) < 256 { end += 1 }
        guard end < bytes.count, bytes[end] == 0 else { throw Malformed() }
        return String(decoding: bytes[Int(at)..<end], as: UTF8.self)
    }
}

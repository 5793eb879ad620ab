import CheckpointImage

/// Restoring on a kernel whose vdso differs (spec/decisions/0009): the image's
/// own vdso pages go back at their saved address, and each function it exports
/// is overwritten with a jump to the same function of this kernel's vdso — so
/// pointers the program resolved into the old vdso (glibc keeps them) still
/// work. This is what CRIU does; the new vdso and its vvar stay where this
/// kernel put them.
struct VdsoProxy {
    /// The exported functions of a vdso image: name → offset from its start and size.
    /// The image's bytes come from the checkpoint, so they are read through the
    /// project's one cursor of untrusted bytes, every offset checked.
    static func functions(of image: [UInt8]) throws(RestoreError) -> [String: (offset: UInt64, size: UInt64)] {
        var elf = ByteCursor(image, what: "vdso")
        func u16(_ at: UInt64) throws(ImageError) -> UInt64 { try elf.seek(to: at); return UInt64(try elf.readLE(UInt16.self)) }
        func u32(_ at: UInt64) throws(ImageError) -> UInt64 { try elf.seek(to: at); return UInt64(try elf.readLE(UInt32.self)) }
        func u64(_ at: UInt64) throws(ImageError) -> UInt64 { try elf.seek(to: at); return try elf.readLE(UInt64.self) }
        func sum(_ a: UInt64, _ b: UInt64) throws(ImageError) -> UInt64 { try checkedAdd(a, b, "an ELF offset") }
        func name(at offset: UInt64) throws(ImageError) -> String {
            try elf.seek(to: offset)
            var bytes: [UInt8] = []
            while bytes.count < 256, let byte = try elf.readBytes(1).first, byte != 0 { bytes.append(byte) }
            return String(decoding: bytes, as: UTF8.self)
        }
        let invalid = RestoreError(.incompatible, "the image's vdso cannot be read as an ELF object with exported functions; it cannot be redirected to this kernel's")
        do throws(ImageError) {
            guard image.count >= 64, image[0..<4].elementsEqual([0x7f, 0x45, 0x4c, 0x46]), image[4] == 2 else {
                throw ImageError(.badMagic, "not a 64-bit ELF object")
            }
            // The address the first PT_LOAD maps at the start of the image.
            let phoff = try u64(32), phentsize = try u16(54), phnum = try u16(56)
            var base: UInt64? = nil
            for i in 0..<min(phnum, 64) {
                let ph = try sum(phoff, i * phentsize)
                if try u32(ph) == 1 { base = try u64(try sum(ph, 16)); break }     // PT_LOAD: p_vaddr
            }
            let shoff = try u64(40), shentsize = try u16(58), shnum = try u16(60)
            var result: [String: (UInt64, UInt64)] = [:]
            for i in 0..<min(shnum, 256) {
                let sh = try sum(shoff, i * shentsize)
                guard try u32(try sum(sh, 4)) == 11 else { continue }                 // SHT_DYNSYM
                let symbols = try u64(try sum(sh, 24)), size = try u64(try sum(sh, 32)), link = try u32(try sum(sh, 40))
                let strtab = try u64(try sum(try sum(shoff, link * shentsize), 24))
                for k in 0..<min(size / 24, 4096) {
                    let sym = try sum(symbols, k * 24)
                    try elf.seek(to: try sum(sym, 4))
                    let info = try elf.readLE(UInt8.self)
                    let shndx = try u16(try sum(sym, 6))
                    guard info & 0xf == 2, info >> 4 != 0, shndx != 0 else { continue }   // STT_FUNC, not local, defined
                    let value = try u64(try sum(sym, 8))
                    guard let base, value >= base else { continue }
                    result[try name(at: try sum(strtab, try u32(sym)))] = (value - base, try u64(try sum(sym, 16)))
                }
            }
            guard !result.isEmpty else { throw ImageError(.structural, "no exported functions") }
            return result
        } catch {
            var failure = invalid
            failure.cause = .image(error)
            throw failure
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

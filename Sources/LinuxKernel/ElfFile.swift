#if canImport(Glibc)
import Glibc
#endif
import CLibelf

/// What capture needs from an ELF object, read with libelf (elf(3)): its
/// loadable segments — to tell .data/.bss from text, as the paper does from
/// PE headers — and its GNU build ID, part of a mapped file's identity.
package struct ElfFile {
    package struct Segment {
        package var offset: UInt64
        package var fileSize: UInt64
        package var memorySize: UInt64
        package var writable: Bool
        package var executable: Bool
    }

    package var segments: [Segment]
    package var buildID: [UInt8]

    /// Reads `path`; nil when it is not an ELF file or cannot be read.
    package init?(path: String) {
        guard elf_version(UInt32(EV_CURRENT)) != UInt32(EV_NONE) else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let elf = elf_begin(fd, ELF_C_READ, nil) else { return nil }
        defer { elf_end(elf) }
        guard elf_kind(elf) == ELF_K_ELF else { return nil }
        var count = 0
        guard elf_getphdrnum(elf, &count) == 0, count < 4096 else { return nil }
        var segments: [Segment] = []
        var buildID: [UInt8] = []
        for i in 0..<count {
            var phdr = GElf_Phdr()
            guard gelf_getphdr(elf, Int32(i), &phdr) != nil else { continue }
            if phdr.p_type == UInt32(PT_LOAD) {
                segments.append(Segment(offset: phdr.p_offset, fileSize: phdr.p_filesz, memorySize: phdr.p_memsz,
                                        writable: phdr.p_flags & UInt32(PF_W) != 0, executable: phdr.p_flags & UInt32(PF_X) != 0))
            } else if phdr.p_type == UInt32(PT_NOTE), buildID.isEmpty, phdr.p_filesz < 1 << 16 {
                buildID = ElfFile.buildID(elf: elf, offset: phdr.p_offset, size: phdr.p_filesz)
            }
        }
        self.segments = segments
        self.buildID = buildID
    }

    /// NT_GNU_BUILD_ID from a PT_NOTE segment.
    private static func buildID(elf: OpaquePointer, offset: UInt64, size: UInt64) -> [UInt8] {
        guard let data = elf_getdata_rawchunk(elf, Int64(offset), Int(size), ELF_T_NHDR), let base = data.pointee.d_buf else { return [] }
        let bytes = UnsafeRawBufferPointer(start: base, count: data.pointee.d_size)
        var position = 0
        var nhdr = GElf_Nhdr()
        var nameOffset = 0
        var descOffset = 0
        while position < bytes.count {
            let next = gelf_getnote(data, position, &nhdr, &nameOffset, &descOffset)
            if next == 0 { break }
            if nhdr.n_type == UInt32(NT_GNU_BUILD_ID), nhdr.n_namesz == 4, descOffset + Int(nhdr.n_descsz) <= bytes.count {
                return Array(bytes[descOffset..<(descOffset + Int(nhdr.n_descsz))])
            }
            position = next
        }
        return []
    }

    /// The segment a mapping at file offset `offset` comes from.
    package func segment(containingFileOffset offset: UInt64) -> Segment? {
        // Mappings start at the page-aligned offset of their segment.
        segments.first { s in
            let alignedStart = s.offset & ~UInt64(4095)
            return offset >= alignedStart && offset < s.offset + max(s.fileSize, 1)
        }
    }
}

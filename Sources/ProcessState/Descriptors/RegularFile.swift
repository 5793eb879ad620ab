import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A regular file (S_IFREG): reopened by path at its offset; a deleted one is
/// captured with its contents and comes back as a memfd holding them.
package enum RegularFileDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.regular]
    package static var setsStatusFlags: Bool { true }

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        probe.mode == FileType.regular ? .regular : nil
    }

    package static func capture(_ probe: DescriptorProbe, into object: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        guard probe.link.hasSuffix(" (deleted)") else { return }
        object.deleted = true
        try FileContents.copy(into: &object, size: Int(probe.status?.size ?? 0), &context)
    }

    package static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        try PathReopen.open(object, &context)
    }
}

/// Copying a file's contents into the image (deleted files, memfds).
enum FileContents {
    /// pread(2) of the whole file through a borrowed descriptor (pidfd_getfd), up to
    /// ``DescriptorCaptureContext/maxContents``.
    static func copy(into h: inout Ccimg_V1_Handle, size: Int, _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        guard size <= DescriptorCaptureContext.maxContents else {
            context.warn("fd \(h.fd): contents of \(size) bytes exceed \(DescriptorCaptureContext.maxContents); not stored")
            return
        }
        let ours = try context.borrow(h.fd)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            // A failed read ends the copy where it is, as the end of the file does.
            let n = bytes.withUnsafeMutableBytes { buffer in
                (try? ours.pread(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: UInt64(done))) ?? 0
            }
            if n <= 0 { break }
            done += n
        }
        h.contents = Data(bytes.prefix(done))
    }
}

/// Reopening by path (openat), shared by files, directories, devices, terminals and FIFOs.
enum PathReopen {
    /// openat(2) of the object's path with its saved flags (never O_CREAT, O_EXCL,
    /// O_TRUNC; O_NOCTTY for a tty; O_NONBLOCK for a FIFO, so as not to wait for a
    /// peer), then lseek(2) to a regular file's offset. A deleted file becomes a
    /// memfd with its contents; a missing one cannot run here (incompatible).
    static func open(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64 {
        if h.deleted {
            let fd = try context.memfd(named: h.path, contents: h.contents, offset: h.offset)
            context.warn("fd \(h.fd): \(h.path) was deleted; it is restored as a memfd with its contents")
            return fd
        }
        typealias F = DescriptorFlags
        var flags = h.openFlags & ~(F.O_CREAT | F.O_EXCL | F.O_TRUNC)
        if h.type == .tty { flags |= F.O_NOCTTY }
        if h.type == .fifo { flags |= F.O_NONBLOCK }
        let path = try context.put(string: h.path)
        guard FileSystem.exists(h.path) else {
            throw .state(StateError(.incompatible, "fd \(h.fd): \(h.path) is missing here; the process had it open"))
        }
        let fd = try context.call("openat(\(h.path))", X86Syscall.openat, [UInt64(bitPattern: F.AT_FDCWD), path, UInt64(flags)])
        if h.type == .regular && h.offset != 0 {
            try context.call("lseek", X86Syscall.lseek, [fd, UInt64(bitPattern: h.offset), F.SEEK_SET])
        }
        return fd
    }
}

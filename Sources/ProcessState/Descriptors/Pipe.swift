import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A pipe (`pipe:[ino]`) or FIFO (a named S_IFIFO): the pipe inode shared by both
/// ends, and the bytes queued in it, copied with tee(2) so the process still
/// reads them. A pipe is made again with pipe2(2) and refilled; a FIFO is
/// reopened by path (O_NONBLOCK). At fds 0–2, a FIFO, or a pipe whose other end
/// is outside the process, stays ccpm's own.
package enum PipeDescriptor: DescriptorKind {
    package static let types: [Ccimg_V1_HandleType] = [.pipe, .fifo]
    package static var setsStatusFlags: Bool { true }

    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        if probe.link.hasPrefix("pipe:[") || (probe.mode == FileType.fifo && !probe.link.hasPrefix("/")) { return .pipe }
        return probe.mode == FileType.fifo ? .fifo : nil
    }

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        h.pipeID = probe.inode
        guard !context.pipesRead.contains(h.pipeID) else { return }
        let ours = try context.borrow(h.fd)
        guard let queued = try? ours.queuedBytes(), queued > 0 else { return }
        context.pipesRead.insert(h.pipeID)
        h.unread = Data(try ours.peekPipe(count: queued))
    }

    package static func inheritsStandardDescriptor(_ h: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool {
        h.type == .fifo || !context.holdsOtherEnd(h)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        if h.type == .fifo {
            if context.pipeEnds[h.pipeID] == nil { try refillFifo(h, &context) }
            return try PathReopen.open(h, &context)
        }
        var ends = context.pipeEnds[h.pipeID]
        if ends == nil {
            let fdsAddress = try context.put([UInt8](repeating: 0, count: 8))
            try context.call("pipe2", X86Syscall.pipe2, [fdsAddress, 0])
            let fds = try context.get(8, at: fdsAddress)
            let read = UInt64(fds[0..<4].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
            let write = UInt64(fds[4..<8].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
            // The unread bytes go back into the pipe (raised to fit, F_SETPIPE_SZ).
            try refill(h, through: write, &context)
            ends = (read, write)
            context.pipeEnds[h.pipeID] = ends
            if !context.holdsOtherEnd(h) {
                context.warn("fd \(h.fd): the other end of its pipe was outside the process; that end is restored closed")
            }
        }
        let end = h.openFlags & DescriptorFlags.O_ACCMODE == DescriptorFlags.O_WRONLY ? ends!.write : ends!.read
        return try context.call("fcntl(F_DUPFD)", X86Syscall.fcntl, [end, DescriptorFlags.F_DUPFD, 0])
    }

    /// Before the first end of a FIFO is reopened: a reader and a writer of the restore's
    /// own (open(2) O_NONBLOCK), so that no end waits or fails (ENXIO) for want of a peer,
    /// and the unread bytes written back through them. Both are closed with the pipes'
    /// ends, once every end the process had is open again.
    static func refillFifo(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) {
        guard FileSystem.exists(h.path) else {
            throw .state(StateError(.incompatible, "fd \(h.fd): \(h.path) is missing here; the process had it open"))
        }
        let path = try context.put(string: h.path)
        typealias F = DescriptorFlags
        let at = UInt64(bitPattern: F.AT_FDCWD)
        let reader = try context.call("openat(\(h.path), O_RDONLY)", X86Syscall.openat,
                                      [at, path, UInt64(F.O_RDONLY | F.O_NONBLOCK | F.O_CLOEXEC)])
        let writer = try context.call("openat(\(h.path), O_WRONLY)", X86Syscall.openat,
                                      [at, path, UInt64(F.O_WRONLY | F.O_NONBLOCK | F.O_CLOEXEC)])
        context.pipeEnds[h.pipeID] = (reader, writer)
        try refill(h, through: writer, &context)
    }

    /// The unread bytes of the pipe of `h` (kept with one of its ends) written back
    /// through `writer`, the pipe raised to fit them first (F_SETPIPE_SZ).
    static func refill(_ h: Ccimg_V1_Handle, through writer: UInt64, _ context: inout DescriptorRestoreContext) throws(StateFailure) {
        let unread = context.table.objects.first { $0.pipeID == h.pipeID && !$0.unread.isEmpty }?.unread ?? Data()
        if unread.count > 65536 {
            try context.call("fcntl(F_SETPIPE_SZ)", X86Syscall.fcntl, [writer, UInt64(Linux.F_SETPIPE_SZ), UInt64(unread.count)])
        }
        try context.writeAll(Array(unread), to: writer)
    }
}

import CheckpointImage
import LinuxKernel
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a kind's restore may use: injected calls into the process, the whole
/// table (a pipe looks for its other end), and the mechanics kinds share.
package struct DescriptorRestoreContext {
    /// Injected calls into the process being restored.
    package var remote: RemoteCalls
    /// The image's open file descriptions and descriptors.
    package let table: OpenFileTable
    /// What was restored only in part.
    package var warnings: [String] = []
    /// Pipes made so far, by pipe inode: both ends, closed once every object exists.
    package var pipeEnds: [UInt64: (read: UInt64, write: UInt64)] = [:]

    /// Adds a warning (an object restored only in part).
    package mutating func warn(_ text: String) { warnings.append(text) }

    /// Runs `number(args)` in the process (``RemoteCalls/call(_:_:_:in:)``); a failure
    /// is the kind's ``StateFailure/system(_:)``.
    @discardableResult
    package mutating func call(_ name: String, _ number: Int, _ args: [UInt64]) throws(StateFailure) -> UInt64 {
        do throws(SystemCallError) { return try remote.call(name, number, args) } catch { throw .system(error) }
    }

    /// Copies `bytes` into the scratch area of the process; returns their address there.
    package mutating func put(_ bytes: [UInt8]) throws(StateFailure) -> UInt64 {
        do throws(SystemCallError) { return try remote.put(bytes) } catch { throw .system(error) }
    }

    /// Copies `string` with its NUL into the scratch area; returns its address there.
    package mutating func put(string: String) throws(StateFailure) -> UInt64 {
        do throws(SystemCallError) { return try remote.put(string: string) } catch { throw .system(error) }
    }

    /// Reads `count` bytes of the process at `address`.
    package func get(_ count: Int, at address: UInt64) throws(StateFailure) -> [UInt8] {
        do throws(SystemCallError) { return try remote.get(count, at: address) } catch { throw .system(error) }
    }

    /// Whether the process also holds the other end of pipe `h` (a read end for a write end).
    package func holdsOtherEnd(_ h: Ccimg_V1_Handle) -> Bool {
        let mode = h.openFlags & DescriptorFlags.O_ACCMODE
        return table.objects.contains { $0.type == .pipe && $0.pipeID == h.pipeID && $0.openFlags & DescriptorFlags.O_ACCMODE != mode }
    }

    /// memfd_create(2) in the process, holding `contents`, positioned at `offset` (lseek).
    package mutating func memfd(named name: String, contents: Data, offset: Int64) throws(StateFailure) -> UInt64 {
        let address = try put(string: String(name.suffix(200)))
        let fd = try call("memfd_create", X86Syscall.memfdCreate, [address, 0])
        try writeAll(Array(contents), to: fd)
        try call("lseek", X86Syscall.lseek, [fd, UInt64(bitPattern: offset), DescriptorFlags.SEEK_SET])
        return fd
    }

    /// write(2) of `bytes` to `fd` in the process, through the scratch area.
    package mutating func writeAll(_ bytes: [UInt8], to fd: UInt64) throws(StateFailure) {
        var done = 0
        while done < bytes.count {
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            let room = remote.scratchCapacity - Int(mark) - 16
            guard room > 0 else { throw .system(SystemCallError("write (in the restored process): no scratch room", errno: .noMemory)) }
            let chunk = Array(bytes[done..<min(bytes.count, done + room)])
            let address = try put(chunk)
            let n = try call("write", X86Syscall.write, [fd, address, UInt64(chunk.count)])
            guard n > 0 else { throw .system(SystemCallError("write (in the restored process)", errno: .ioError)) }
            done += Int(n)
        }
    }
}

/// File descriptors (§5.3 handles, sync objects): each open file description is
/// created once in the process at a free number, then given every saved number
/// that names it (dup3, so they share offset, flags, counter, pipe end), then
/// epoll sets are refilled once every target exists.
package struct DescriptorRestore {
    /// The injected calls, the table and what the kinds made so far.
    package var context: DescriptorRestoreContext
    /// Injected calls into the process being restored.
    package var remote: RemoteCalls {
        get { context.remote }
        set { context.remote = newValue }
    }
    /// What was restored only in part.
    package var warnings: [String] { context.warnings }

    /// Restores `table` (``ImageReader/openFiles()``) through `remote`.
    package init(table: OpenFileTable, remote: RemoteCalls) {
        context = DescriptorRestoreContext(remote: remote, table: table)
    }

    /// Whether the object's descriptors 0–2 keep ccpm's own (a pipe whose other end
    /// the process does not hold, a tty, a socket, a FIFO), as a shell job would
    /// (CRIU's --shell-job / --inherit-fd).
    func inherits(_ h: Ccimg_V1_Handle) -> Bool {
        h.fd <= 2 && DescriptorTable.kind(for: h.type).inheritsStandardDescriptor(h, context)
    }

    /// Closes saved-absent fds 0–2, creates every object (each kind's restore),
    /// places them at their numbers (dup3), then refills epoll sets (epoll_ctl).
    package mutating func restore() throws(StateFailure) {
        let table = context.table
        for fd in Int32(0)...2 where !table.descriptors.contains(where: { $0.fd == fd }) {
            try context.call("close(\(fd))", X86Syscall.close, [UInt64(fd)])
        }
        var next = UInt64((table.descriptors.map(\.fd).max() ?? 2) + 1)
        var placed: [(temporary: UInt64, object: Ccimg_V1_Handle)] = []
        var inherited: [Ccimg_V1_Handle] = []
        for h in table.objects.sorted(by: { $0.fd < $1.fd }) {
            if inherits(h) { inherited.append(h); continue }
            let mark = remote.scratchMark
            defer { remote.release(to: mark) }
            guard let fd = try DescriptorTable.kind(for: h.type).restore(h, &context) else { continue }
            // Parked out of the way of every saved number until all exist.
            let temporary = next
            next += 1
            if fd != temporary {
                try context.call("dup3", X86Syscall.dup3, [fd, temporary, 0])
                try context.call("close", X86Syscall.close, [fd])
            }
            placed.append((temporary, h))
        }
        for end in context.pipeEnds.values {
            try context.call("close", X86Syscall.close, [end.read])
            try context.call("close", X86Syscall.close, [end.write])
        }
        try place(placed, inherited)
        try refillEpollSets()
    }

    /// Every object to each of its saved numbers, with that descriptor's close-on-exec
    /// flag, and its status flags set once (they belong to the description).
    mutating func place(_ placed: [(temporary: UInt64, object: Ccimg_V1_Handle)], _ inherited: [Ccimg_V1_Handle]) throws(StateFailure) {
        typealias F = DescriptorFlags
        let statusFlags = F.O_APPEND | F.O_NONBLOCK | F.O_ASYNC | F.O_DIRECT | F.O_NOATIME
        func cloexec(_ d: OpenFileTable.Descriptor) -> UInt64 { d.fdFlags & F.FD_CLOEXEC != 0 ? UInt64(F.O_CLOEXEC) : 0 }
        for (temporary, h) in placed {
            for d in context.table.descriptors(of: h.objectID) {
                try context.call("dup3(\(d.fd))", X86Syscall.dup3, [temporary, UInt64(d.fd), cloexec(d)])
            }
            try context.call("close", X86Syscall.close, [temporary])
            if DescriptorTable.kind(for: h.type).setsStatusFlags {
                try context.call("fcntl(F_SETFL)", X86Syscall.fcntl, [UInt64(h.fd), DescriptorFlags.F_SETFL, UInt64(h.openFlags & statusFlags)])
            }
        }
        // An inherited description keeps ccpm's descriptors at 0–2; its other numbers share the lowest.
        for h in inherited {
            for d in context.table.descriptors(of: h.objectID) where d.fd > 2 {
                try context.call("dup3(\(d.fd))", X86Syscall.dup3, [UInt64(h.fd), UInt64(d.fd), cloexec(d)])
            }
        }
    }

    /// epoll sets (epoll_ctl EPOLL_CTL_ADD), now that every target is at its number.
    mutating func refillEpollSets() throws(StateFailure) {
        for h in context.table.objects where h.type == .epoll {
            for target in h.epollTargets {
                let mark = remote.scratchMark
                defer { remote.release(to: mark) }
                let address = try context.put(EpollEvent(events: target.events, data: target.data).encoded)
                try context.call("epoll_ctl(\(h.fd), ADD \(target.fd))", X86Syscall.epollCtl, [UInt64(h.fd), DescriptorFlags.EPOLL_CTL_ADD, UInt64(target.fd), address])
            }
        }
    }
}

import CheckpointImage
import LinuxKernel

/// One kind of file descriptor (§5.3 handles): what it recognises, what it
/// captures and how it is made again, side by side (CRIU's file_desc_ops).
/// A new kind is one type conforming to this and one entry in
/// ``DescriptorTable/kinds``; the table does the rest — classification, the
/// fields every descriptor has, sharing of open file descriptions (kcmp),
/// parking, dup3 to the saved numbers, F_SETFL, epoll refill, fds 0–2.
package protocol DescriptorKind {
    /// §5.3 `HandleType`s this kind writes and restores.
    static var types: [Ccimg_V1_HandleType] { get }
    /// The type of a descriptor this kind recognises (from its /proc link text,
    /// st_mode, rdev), nil when it is not of this kind. Asked in table order.
    static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType?
    /// Reads this kind's own state of one open file description into `object`,
    /// whose common fields (type, path, offset, flags, identity, fdinfo, id) are set.
    static func capture(_ probe: DescriptorProbe, into object: inout Ccimg_V1_Handle,
                        _ context: inout DescriptorCaptureContext) throws(SystemCallError)
    /// Whether an object whose lowest descriptor is 0–2 stays connected outside
    /// the process: then those descriptors keep ccpm's own (CRIU's --inherit-fd).
    static func inheritsStandardDescriptor(_ object: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool
    /// Creates the object in the process being restored (injected calls) and
    /// returns its descriptor there, or nil when it is not restored (a warning says so).
    static func restore(_ object: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64?
    /// Whether the saved status flags (O_APPEND, O_NONBLOCK, …) are set again with
    /// fcntl(F_SETFL) once the object is at its numbers.
    static var setsStatusFlags: Bool { get }
    /// Why this version cannot bring the captured object back, or nil when it can: a
    /// capture that ends the process refuses first (``CapturedRecords/unrestorable``).
    static func cannotRestore(_ object: Ccimg_V1_Handle) -> String?
}

extension DescriptorKind {
    package static func capture(_ probe: DescriptorProbe, into object: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {}
    package static func inheritsStandardDescriptor(_ object: Ccimg_V1_Handle, _ context: DescriptorRestoreContext) -> Bool { false }
    package static var setsStatusFlags: Bool { false }
    package static func cannotRestore(_ object: Ccimg_V1_Handle) -> String? { nil }
}

/// A kind recognised by its /proc link text alone, an anonymous inode
/// (`anon_inode:[eventfd]`, …): it is of the first of its ``DescriptorKind/types``.
package protocol AnonymousInodeKind: DescriptorKind {
    /// The link texts of /proc/PID/fd/N that name this kind.
    static var links: [String] { get }
}

extension AnonymousInodeKind {
    package static func classify(_ probe: DescriptorProbe) -> Ccimg_V1_HandleType? {
        links.contains(probe.link) ? types[0] : nil
    }
}

/// What /proc says of one descriptor of the process, read once: the link text of
/// /proc/PID/fd/N, its fdinfo fields, and stat(2) through the link.
package struct DescriptorProbe {
    /// The descriptor's number in the process.
    package let fd: Int32
    /// readlink(/proc/PID/fd/N): a path, `pipe:[ino]`, `socket:[ino]`, `anon_inode:[eventfd]`, …
    package let link: String
    /// /proc/PID/fdinfo/N as key/value pairs, in order.
    package let fdinfo: [(String, String)]
    /// stat(2) of /proc/PID/fd/N, nil when it failed.
    package let status: FileStatus?

    /// Reads descriptor `fd` of process `pid`.
    package init(pid: Int32, fd: Int32) throws(SystemCallError) {
        self.fd = fd
        link = try ProcFS.readLink("/proc/\(pid)/fd/\(fd)")
        fdinfo = ProcFS.parseFdinfo(try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)"))
        status = try? FileStatus(path: "/proc/\(pid)/fd/\(fd)")
    }

    /// A probe from parts (tests).
    package init(fd: Int32, link: String, fdinfo: [(String, String)], status: FileStatus?) {
        self.fd = fd
        self.link = link
        self.fdinfo = fdinfo
        self.status = status
    }

    /// The value of fdinfo field `key` (`pos`, `flags`, `eventfd-count`, …).
    package func field(_ key: String) -> String? { fdinfo.first { $0.0 == key }?.1 }
    /// The file type bits of st_mode (``FileType``); 0 when stat failed.
    package var mode: UInt32 { status?.fileType ?? 0 }
    /// st_ino, 0 when stat failed.
    package var inode: UInt64 { status?.inode ?? 0 }
    /// st_rdev of a device, as the kernel's old 32-bit encoding the image keeps.
    package var rdev: UInt32 { UInt32(truncatingIfNeeded: status?.rdev ?? 0) }
    /// The major number of a character device.
    package var rdevMajor: UInt32 { (rdev >> 8) & 0xfff }
    /// O_* flags of the description from fdinfo (octal), close-on-exec included.
    package var flags: UInt32 { UInt32(field("flags") ?? "0", radix: 8) ?? 0 }
    /// Which descriptors may share an open file description with this one: the same
    /// file (st_dev, st_ino), or — without stat — the same link text. kcmp decides.
    package var sharingKey: String {
        guard let st = status else { return "link:" + link }
        return "\(st.device):\(st.inode)"
    }
}

/// The kinds of descriptor, in the order they are asked to recognise one.
package enum DescriptorTable {
    /// Every kind; a descriptor is of the first that recognises it, else ``OtherDescriptor``.
    package static let kinds: [any DescriptorKind.Type] = [
        PipeDescriptor.self, SocketDescriptor.self, EventFdDescriptor.self, TimerFdDescriptor.self,
        SignalFdDescriptor.self, EpollDescriptor.self, InotifyDescriptor.self, OtherDescriptor.self,
        MemfdDescriptor.self, TtyDescriptor.self, DeviceDescriptor.self, DirectoryDescriptor.self,
        RegularFileDescriptor.self,
    ]

    /// The kind and type of a descriptor (classified once, here).
    package static func classify(_ probe: DescriptorProbe) -> (kind: any DescriptorKind.Type, type: Ccimg_V1_HandleType) {
        for kind in kinds {
            if let type = kind.classify(probe) { return (kind, type) }
        }
        return (OtherDescriptor.self, .other)
    }

    /// The kind that restores objects of `type`.
    package static func kind(for type: Ccimg_V1_HandleType) -> any DescriptorKind.Type {
        kinds.first { $0.types.contains(type) } ?? OtherDescriptor.self
    }
}

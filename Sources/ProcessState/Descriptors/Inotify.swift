import CheckpointImage
import LinuxKernel

/// An inotify instance (`anon_inode:inotify`): its watches are in the saved
/// fdinfo text (`inotify wd:… ino:… sdev:… mask:… f_handle:…`). Made again with
/// inotify_init1(2); each watched file is found by its handle (open_by_handle_at)
/// and watched in watch-descriptor order, so the numbers come out the same.
package enum InotifyDescriptor: AnonymousInodeKind {
    package static let types: [Ccimg_V1_HandleType] = [.inotify]
    package static let links = ["anon_inode:inotify", "anon_inode:[inotify]"]

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        let fd = try context.call("inotify_init1", X86Syscall.inotifyInit1, [UInt64(h.openFlags & DescriptorFlags.O_NONBLOCK)])
        try addWatches(fd: fd, fdinfo: h.fdinfo, savedFD: h.fd, &context)
        return fd
    }

    /// The watches of an inotify fdinfo text, in wd order, as key/value tokens (`wd`, `ino`,
    /// `sdev`, `mask`, `fhandle-type`, `f_handle`). The kernel prints `inotify wd:1 ino:…`;
    /// a capture records each line as `key:\tvalue` cut at its first colon, so the text
    /// holds `inotify wd:\t1 ino:…`: both forms are read.
    static func watches(inFdinfo fdinfo: String) -> [[String: String]] {
        fdinfo.split(separator: "\n").filter { $0.hasPrefix("inotify") }.map { line in
            ProcFS.tokens(String(line.dropFirst("inotify".count).drop { $0 == ":" }).replacing("\t", with: " "))
        }.sorted { Int($0["wd"] ?? "0") ?? 0 < Int($1["wd"] ?? "0") ?? 0 }
    }

    /// inotify_add_watch(2) of every watch of the saved fdinfo lines, in wd order.
    static func addWatches(fd: UInt64, fdinfo: String, savedFD: Int32, _ context: inout DescriptorRestoreContext) throws(StateFailure) {
        for w in watches(inFdinfo: fdinfo) {
            guard let handleHex = w["f_handle"], let type = Int32(w["fhandle-type"] ?? "", radix: 16),
                  let mask = UInt32(w["mask"] ?? "", radix: 16), let sdev = UInt64(w["sdev"] ?? "", radix: 16) else {
                context.warn("fd \(savedFD): an inotify watch (wd \(w["wd"] ?? "?")) is recorded without its file handle; not restored")
                continue
            }
            let handle = stride(from: 0, to: handleHex.count - 1, by: 2).compactMap { i -> UInt8? in
                let a = handleHex.index(handleHex.startIndex, offsetBy: i)
                return UInt8(handleHex[a...handleHex.index(after: a)], radix: 16)
            }
            guard let path = path(ofHandle: handle, type: type, device: sdev) else {
                context.warn("fd \(savedFD): an inotify watch (inode \(w["ino"] ?? "?")) names a file that is gone; not restored")
                continue
            }
            let address = try context.put(string: path)
            try context.call("inotify_add_watch(\(path))", X86Syscall.inotifyAddWatch, [fd, address, UInt64(mask)])
        }
    }

    /// The path of the file with handle `handle` on the file system of kernel device `device`.
    static func path(ofHandle handle: [UInt8], type: Int32, device: UInt64) -> String? {
        // The kernel's dev_t in fdinfo is major << 20 | minor; find a mount of that device.
        let major = device >> 20, minor = device & 0xfffff
        let mountinfo = (try? ProcFS.read("/proc/self/mountinfo")) ?? ""
        let mounts = mountinfo.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            return f.count > 4 && f[2] == "\(major):\(minor)" ? String(f[4]) : nil
        }
        for mount in mounts + ["/"] {
            if let path = FileHandles.path(ofHandle: handle, type: type, mountPoint: mount) { return path }
        }
        return nil
    }
}

import Dispatch
import LinuxKernel
import ProcessState
import CheckpointImage
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SwiftProtobuf

/// What `ccpm restore` was asked for.
public struct RestoreOptions: Sendable {
    /// Directories searched for parent images by UUID (§8), after the image's own directory.
    public var storeDirectories: [String] = []
    /// Restore in a new PID namespace even when the image's PIDs are free here.
    public var newPIDNamespace = false
    /// Redirect the image's vdso to this kernel's even when their layouts match
    /// (what a restore on another kernel does by itself).
    public var vdsoProxy = false
    /// Told about choices made on the way (a new PID namespace, what was skipped).
    public var notice: (@Sendable (String) -> Void)? = nil

    /// The defaults: no stores, the image's own PID namespace when its PIDs are free.
    public init() {}
}

/// A process brought back and running (detached from ccpm's tracing).
public struct RestoreSummary: Sendable {
    /// The process as this PID namespace sees it.
    public var pid: Int32
    /// The process's own PID (the image's), which it sees in its namespace.
    public var imagePID: Int32
    /// ccpm's direct child: the process, or its PID namespace's init. Wait for this one.
    public var child: Int32
    /// Whether it runs in a new PID namespace (its PIDs were taken here, or --pidns).
    public var inNewNamespace: Bool
    /// Threads recreated, the main thread included.
    public var threads: Int
    /// Pages written into the process, and bytes.
    public var pagesWritten: UInt64
    /// Nanoseconds from the start of the restore until the process ran again.
    public var nanoseconds: UInt64
    /// What was restored only in part (a pipe's outside end, a lost timerfd count).
    public var warnings: [String]
}

/// The restorer (issue #4): brings a process back from an image or a chain,
/// at the same PID and TIDs, with the same memory at the same addresses, the
/// same registers, files and signal state — the paper's loader-side restore
/// (WriteProcessMemory, CreateRemoteThread, SetThreadContext) done with
/// clone3, ptrace and system calls injected into the new process.
///
/// The steps (spec/decisions/0009-restore.md):
/// 1. open and verify the chain; check that it can run here (architecture,
///    XSAVE features, the identity of every mapped file) and whether this
///    kernel's vdso has the image's layout;
/// 2. start the image's executable with clone3(set_tid) — in a new PID
///    namespace when its PIDs are taken — stopped at its exec;
/// 3. from inside that process: unmap what exec mapped, move the vdso and vvar
///    to their saved addresses (or, on another kernel, redirect the image's
///    vdso to this one's: `VdsoProxy`), map every VMA, write the pages (/proc/PID/mem),
///    set the mm fields (PR_SET_MM_MAP);
/// 4. recreate file descriptors, signal dispositions, timers, cwd and umask;
///    rlimits from outside (prlimit);
/// 5. create the other threads (clone3 set_tid), give each its alternate
///    stack, clear-tid address, robust list, pending signals, credentials,
///    registers, XSAVE state and signal mask;
/// 6. detach. A thread stopped at capture stays stopped (SIGSTOP).
public enum Restorer {
    /// Restores the image at `path`. On any failure the half-made process is killed and reaped.
    public static func restore(path: String, options: RestoreOptions = RestoreOptions()) throws(RestoreError) -> RestoreSummary {
        let start = DispatchTime.now().uptimeNanoseconds
        let image = try RestoreImage(path: path, storeDirectories: options.storeDirectories)
        let vdsoMatches = try image.checkCompatible()
        if !vdsoMatches { options.notice?("this kernel's vdso differs from the image's: its functions are redirected to this kernel's") }

        let tids = image.threads.map(\.tid)
        let taken = ([image.process.pid] + tids).filter { ProcessHandle.pidInUse($0) }
        var newNamespace = options.newPIDNamespace
        if !taken.isEmpty && !newNamespace {
            newNamespace = true
            options.notice?("pid \(taken.map(String.init).joined(separator: ", ")) taken here: restoring in a new PID namespace")
        }
        let process = try RestoredProcess(executable: image.process.exePath, imagePID: image.process.pid, newNamespace: newNamespace)
        var builder = try ProcessBuilder(image: image, pid: process.pid, vdsoProxy: options.vdsoProxy || !vdsoMatches)
        try builder.build()
        let threads = builder.threadCount
        let pages = builder.pagesWritten
        let warnings = builder.warnings
        let (pid, child) = process.release()
        return RestoreSummary(pid: pid, imagePID: image.process.pid, child: child, inNewNamespace: newNamespace,
                              threads: threads, pagesWritten: pages,
                              nanoseconds: DispatchTime.now().uptimeNanoseconds - start, warnings: warnings)
    }
}

/// The image of a restore: its chain and the sections the restore needs.
struct RestoreImage {
    let chain: ImageChain
    let process: Ccimg_V1_ProcessInfo
    let threads: [Ccimg_V1_ThreadState]
    let vmas: [Ccimg_V1_Vma]
    let signals: Ccimg_V1_SignalDispositions
    /// §5.3 handles and the sync-objects entries of their objects, checked (1.0: one object per fd).
    let openFiles: OpenFileTable
    let sync: Ccimg_V1_SyncObjects

    init(path: String, storeDirectories: [String]) throws(RestoreError) {
        // Opening the chain checks its structure: header, footer, index and section
        // blocks with their checksums, and every parent's UUID and index digest (§8).
        // Page frames are checked as they are decompressed (§6.1): a damaged one ends
        // the restore there, and the half-made process is killed before it ever ran.
        // (No separate pass over every frame first: decision 0019, "Figures".)
        do throws(ImageError) {
            chain = try ImageChain.open(path: path, storeDirectories: storeDirectories)
            let top = chain.top
            func required<M: SwiftProtobuf.Message>(_ kind: SectionKind, _ type: M.Type) throws(ImageError) -> M {
                guard let m = try top.section(kind, as: type) else {
                    throw ImageError(.structural, "the image has no \(kind) section, which a restore needs", path: path)
                }
                return m
            }
            process = try required(.process, Ccimg_V1_ProcessInfo.self)
            threads = try required(.threads, Ccimg_V1_ThreadList.self).threads
            vmas = top.memoryMap
            signals = try top.section(.signals, as: Ccimg_V1_SignalDispositions.self) ?? .init()
            openFiles = try top.openFiles()
            sync = try top.section(.syncObjects, as: Ccimg_V1_SyncObjects.self) ?? .init()
        } catch {
            throw RestoreError(error)
        }
        guard threads.first?.tid == process.pid else {
            throw RestoreError(ImageError(.structural, "the first thread is not the main thread", path: path))
        }
    }

    /// The thread's XSAVE area as this CPU takes it (``XSaveArea``).
    func xsaveArea(of thread: Ccimg_V1_ThreadState) throws(RestoreError) -> (area: Data, dropped: Bool) {
        try XSaveArea.fitted(thread.xsave, tid: thread.tid, threadFeatures: thread.xsaveFeatures,
                             savedXCR0: chain.top.header.body.machine.xsaveFeatures, for: .here)
    }

    /// Refuses an image that cannot run here, saying exactly what differs. Returns
    /// whether this kernel's vdso and vvar have the image's layout (else they are
    /// redirected to, which needs the image's vdso pages).
    func checkCompatible() throws(RestoreError) -> Bool {
        let machine = Machine.names().machine
        let arch = chain.top.header.body.machine.arch
        guard arch.isEmpty || arch == machine else {
            throw RestoreError(.incompatible, "the image is for \(arch); this machine is \(machine)")
        }
        for thread in threads { _ = try xsaveArea(of: thread) }
        let here = Dictionary(ProcFS.parseMaps((try? ProcFS.read("/proc/self/maps")) ?? "")
            .filter { $0.path.hasPrefix("[v") }.map { ($0.path, $0.end - $0.start) }, uniquingKeysWith: { a, _ in a })
        let specials = vmas.filter { [.vdso, .vvar, .vvarVclock].contains($0.role) }
        let vdsoMatches = specials.allSatisfy { here[$0.path] == $0.end - $0.start } && Set(specials.map(\.path)) == Set(here.keys.filter { $0 != "[vsyscall]" })
        if !vdsoMatches, let vdso = vmas.firstIndex(where: { $0.role == .vdso }),
           chain.top.pageTables[vdso].counts()[.stored, default: 0] * UInt64(chain.pageSize) < vmas[vdso].end - vmas[vdso].start {
            throw RestoreError(.incompatible, "this kernel's vdso differs from the image's (kernel \(chain.top.header.body.machine.kernelRelease)), and the image does not hold its vdso pages to redirect")
        }
        // Every mapped file and the executable must be the very file captured.
        var checked = Set<String>()
        let files = vmas.filter(ProcessBuilder.isFileBacked)
            .map { ($0.path, $0.fileIdentity) } + [(process.exePath, process.exeIdentity)]
        for (path, saved) in files where checked.insert(path).inserted {
            guard let now = FileIdentity.of(path: path) else {
                throw RestoreError(.incompatible, "\(path) is missing here; the process mapped it")
            }
            if let reason = Self.difference(saved: saved, now: now, path: path) {
                throw RestoreError(.incompatible, "\(path) changed since the checkpoint (\(reason)); restore needs the same file")
            }
        }
        if process.exePath.hasSuffix(" (deleted)") {
            throw RestoreError(.incompatible, "the executable \(process.exePath) was deleted before the checkpoint")
        }
        return vdsoMatches
    }

    /// Why `now` is not the file captured as `saved`, or nil when it is. A file copied to
    /// another machine keeps its size and ELF build-id but not its inode or mtime, so an
    /// ELF file with a build-id is recognised by those two.
    static func difference(saved: Ccimg_V1_FileIdentity, now: Ccimg_V1_FileIdentity, path: String) -> String? {
        if saved.size != now.size { return "size \(saved.size) then, \(now.size) now" }
        if !saved.elfBuildID.isEmpty {
            let buildID = ElfFile(path: path).map { Data($0.buildID) } ?? Data()
            return buildID == saved.elfBuildID ? nil : "another ELF build-id"
        }
        if saved.mtimeNs != now.mtimeNs { return "modified since" }
        return nil
    }
}


extension Restorer {
    /// Waits until the restored process ends (it is ccpm's child, or its namespace's
    /// init is) and returns its exit status, or 128 + the signal that ended it.
    public static func waitForExit(_ summary: RestoreSummary) -> Int32 {
        while true {
            guard let (_, status) = try? Wait.next(summary.child) else { return 0 }
            if status.exited { return status.exitCode }
            if status.signaled { return 128 + status.terminatingSignal }
        }
    }
}

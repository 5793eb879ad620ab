#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CheckpointImage
import LinuxKernel

/// The process-wide facts (spec/image-format.md §5.3 process): IDs, mm fields
/// (/proc/PID/stat), credentials and umask (/proc/PID/status), cwd, root and executable
/// (/proc/PID links), command line, environment, auxv, rlimits (prlimit(2)),
/// personality, and the program break (an injected brk(0)).
///
/// Restored: personality, cwd (chdir), umask from inside; rlimits from outside
/// (prlimit); the credentials last, in every thread (setgroups, setresgid,
/// setresuid), so the process runs as the image's user. The mm fields are set with
/// the memory (PR_SET_MM_MAP).
package enum ProcessFactsKind: StateKind {
    package static let name = "process facts"
    package static let sections: [SectionKind] = [.process]

    // MARK: Capture

    /// brk(0): the program break, which /proc does not show.
    package static func captureInjected(_ target: CaptureTarget, _ remote: inout RemoteCalls?, into records: inout CapturedRecords) throws(SystemCallError) {
        guard var parked = remote else { return }
        defer { remote = parked }
        let currentBreak = try parked.rawCall(X86Syscall.brk, [0])
        if currentBreak > 0 { records.process.mm.brk = UInt64(currentBreak) }
    }

    package static func captureAfterInjection(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure) {
        let brk = records.process.mm.brk
        do throws(SystemCallError) { records.process = try capture(pid: target.pid) } catch { throw .system(error) }
        if brk != 0 { records.process.mm.brk = brk }
    }

    /// The facts of `pid`, read from outside.
    package static func capture(pid: Int32) throws(SystemCallError) -> Ccimg_V1_ProcessInfo {
        var p = Ccimg_V1_ProcessInfo()
        p.pid = pid
        let status = ProcFS.parseStatus(try ProcFS.read("/proc/\(pid)/status"))
        if let stat = ProcFS.parseStat(try ProcFS.read("/proc/\(pid)/stat")) {
            let f = stat.fields
            func u(_ i: Int) -> UInt64 { i < f.count ? UInt64(f[i]) ?? 0 : 0 }
            p.comm = stat.comm
            p.ppid = Int32(f[4]) ?? 0
            p.pgid = Int32(f[5]) ?? 0
            p.sid = Int32(f[6]) ?? 0
            var mm = Ccimg_V1_MmFields()
            mm.startCode = u(26); mm.endCode = u(27); mm.startStack = u(28)
            mm.startData = u(45); mm.endData = u(46); mm.startBrk = u(47)
            mm.argStart = u(48); mm.argEnd = u(49); mm.envStart = u(50); mm.envEnd = u(51)
            p.mm = mm
        }
        p.credentials = credentials(status)
        p.umask = UInt32(status["Umask"] ?? "22", radix: 8) ?? 0o22

        p.cwd = (try? ProcFS.readLink("/proc/\(pid)/cwd")) ?? ""
        p.root = (try? ProcFS.readLink("/proc/\(pid)/root")) ?? ""
        p.exePath = (try? ProcFS.readLink("/proc/\(pid)/exe")) ?? ""
        if var identity = FileIdentity.of(path: "/proc/\(pid)/exe") {
            if let elf = ElfFile(path: "/proc/\(pid)/exe") { identity.elfBuildID = Data(elf.buildID) }
            p.exeIdentity = identity
        }
        p.cmdline = ProcFS.splitNul(try ProcFS.readRaw("/proc/\(pid)/cmdline"))
        p.environ = ProcFS.splitNul((try? ProcFS.readRaw("/proc/\(pid)/environ")) ?? [])
        p.auxv = auxv(try ProcFS.readRaw("/proc/\(pid)/auxv"))
        for resource in 0..<Int32(ResourceLimits.count) {
            guard let limit = try? ResourceLimits.get(pid: pid, resource: resource) else { continue }
            var l = Ccimg_V1_Rlimit()
            l.resource = UInt32(resource)
            l.soft = limit.soft
            l.hard = limit.hard
            p.rlimits.append(l)
        }
        p.personality = UInt32((try? ProcFS.read("/proc/\(pid)/personality"))?.trimmed() ?? "0", radix: 16) ?? 0
        return p
    }

    /// Uid, Gid, Groups and the capability sets of /proc/PID/status.
    static func credentials(_ status: [String: String]) -> Ccimg_V1_Credentials {
        func ids(_ key: String) -> [UInt32] { (status[key] ?? "").split(whereSeparator: { $0 == "\t" || $0 == " " }).compactMap { UInt32($0) } }
        func hex(_ key: String) -> UInt64 { UInt64(status[key] ?? "0", radix: 16) ?? 0 }
        var cred = Ccimg_V1_Credentials()
        let uid = ids("Uid"), gid = ids("Gid")
        if uid.count == 4 { cred.uid = uid[0]; cred.euid = uid[1]; cred.suid = uid[2]; cred.fsuid = uid[3] }
        if gid.count == 4 { cred.gid = gid[0]; cred.egid = gid[1]; cred.sgid = gid[2]; cred.fsgid = gid[3] }
        cred.groups = ids("Groups")
        cred.capInheritable = hex("CapInh"); cred.capPermitted = hex("CapPrm"); cred.capEffective = hex("CapEff")
        cred.capBounding = hex("CapBnd"); cred.capAmbient = hex("CapAmb")
        return cred
    }

    /// The entries of /proc/PID/auxv (pairs of 8-byte words, up to AT_NULL).
    package static func auxv(_ bytes: [UInt8]) -> [Ccimg_V1_AuxvEntry] {
        var entries: [Ccimg_V1_AuxvEntry] = []
        var i = 0
        while i + 16 <= bytes.count {
            let type = bytes.loadLE(UInt64.self, at: i)
            if type == 0 { break }
            var e = Ccimg_V1_AuxvEntry()
            e.type = type
            e.value = bytes.loadLE(UInt64.self, at: i + 8)
            entries.append(e)
            i += 16
        }
        return entries
    }

    // MARK: Restore

    package static func restoreProcessWide(into context: inout RestoreContext) throws(StateFailure) {
        let p = context.process
        do throws(SystemCallError) {
            try context.remote.call("personality", X86Syscall.personality, [UInt64(p.personality)])
            if !p.cwd.isEmpty {
                let path = try context.remote.put(string: p.cwd)
                do throws(SystemCallError) { try context.remote.call("chdir(\(p.cwd))", X86Syscall.chdir, [path]) } catch {
                    context.warn("the working directory \(p.cwd) is gone here; the process stays in /")
                }
            }
            if !p.root.isEmpty && p.root != "/" { context.warn("the process ran chrooted in \(p.root); it is restored unchrooted") }
            try context.remote.call("umask", X86Syscall.umask, [UInt64(p.umask)])
        } catch {
            throw .system(error)
        }
        for limit in p.rlimits {
            do throws(SystemCallError) {
                try ResourceLimits.set(pid: context.pid, resource: Int32(limit.resource), soft: limit.soft, hard: limit.hard)
            } catch {
                context.warn("rlimit \(limit.resource): \(error)")
            }
        }
    }

    /// Credentials last: the process runs as the image's user, not as root.
    package static func restoreThreads(into context: inout RestoreContext) throws(StateFailure) {
        let c = context.process.credentials
        let isRoot = c.uid == 0 && c.euid == 0 && c.suid == 0 && c.gid == 0 && c.egid == 0 && c.sgid == 0
        guard !isRoot else { return }
        do throws(SystemCallError) {
            var groups: [UInt8] = []
            for g in c.groups.prefix(65536) { groups.appendLE(g) }
            let groupsAddress = try context.remote.put(groups)
            for thread in context.threads {
                let tid = context.traced[thread.tid]!
                try context.remote.call("setgroups", X86Syscall.setgroups, [UInt64(c.groups.count), groupsAddress], in: tid)
                try context.remote.call("setresgid", X86Syscall.setresgid, [UInt64(c.gid), UInt64(c.egid), UInt64(c.sgid)], in: tid)
                try context.remote.call("setresuid", X86Syscall.setresuid, [UInt64(c.uid), UInt64(c.euid), UInt64(c.suid)], in: tid)
            }
        } catch {
            throw .system(error)
        }
    }
}

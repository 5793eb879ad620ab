#if canImport(Glibc)
import Glibc
#endif
import CCheckpointKernel
import CheckpointImage
import LinuxKernel
import ProcessState
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The process-wide facts (§5.3 process) from /proc/PID and prlimit(2).
enum ProcessCapture {
    static func capture(pid: Int32) throws(SystemCallError) -> Ccimg_V1_ProcessInfo {
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
        func ids(_ key: String) -> [UInt32] { (status[key] ?? "").split(whereSeparator: { $0 == "\t" || $0 == " " }).compactMap { UInt32($0) } }
        func hex(_ key: String) -> UInt64 { UInt64(status[key] ?? "0", radix: 16) ?? 0 }
        var cred = Ccimg_V1_Credentials()
        let uid = ids("Uid"), gid = ids("Gid")
        if uid.count == 4 { cred.uid = uid[0]; cred.euid = uid[1]; cred.suid = uid[2]; cred.fsuid = uid[3] }
        if gid.count == 4 { cred.gid = gid[0]; cred.egid = gid[1]; cred.sgid = gid[2]; cred.fsgid = gid[3] }
        cred.groups = ids("Groups")
        cred.capInheritable = hex("CapInh"); cred.capPermitted = hex("CapPrm"); cred.capEffective = hex("CapEff")
        cred.capBounding = hex("CapBnd"); cred.capAmbient = hex("CapAmb")
        p.credentials = cred
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
        let auxv = try ProcFS.readRaw("/proc/\(pid)/auxv")
        var i = 0
        while i + 16 <= auxv.count {
            let type = (0..<8).reduce(UInt64(0)) { $0 | UInt64(auxv[i + $1]) << (UInt64($1) * 8) }
            let value = (0..<8).reduce(UInt64(0)) { $0 | UInt64(auxv[i + 8 + $1]) << (UInt64($1) * 8) }
            if type == 0 { break }
            var e = Ccimg_V1_AuxvEntry()
            e.type = type
            e.value = value
            p.auxv.append(e)
            i += 16
        }
        for resource in 0..<16 {
            var soft: UInt64 = 0, hard: UInt64 = 0
            guard cc_prlimit_get(pid, Int32(resource), &soft, &hard) == 0 else { continue }
            var l = Ccimg_V1_Rlimit()
            l.resource = UInt32(resource)
            l.soft = soft
            l.hard = hard
            p.rlimits.append(l)
        }
        p.personality = UInt32((try? ProcFS.read("/proc/\(pid)/personality"))?.trimmed() ?? "0", radix: 16) ?? 0
        return p
    }

    /// This machine (§3.2 MachineFacts): uname(2), XCR0, CPU count.
    static func machineFacts() -> Ccimg_V1_MachineFacts {
        var u = utsname()
        uname(&u)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        }
        var m = Ccimg_V1_MachineFacts()
        m.arch = text(u.machine)
        m.kernelRelease = text(u.release)
        m.hostname = text(u.nodename)
        m.xsaveFeatures = cc_xgetbv0()
        m.cpuCount = UInt32(Host.onlineProcessors)
        return m
    }
}

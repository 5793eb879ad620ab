import CheckpointImage
import LinuxKernel

/// A timerfd (`anon_inode:[timerfd]`): clock, settings, time left and ticks not
/// yet read, from fdinfo, kept in sync-objects by object id; made again with
/// timerfd_create(2) and timerfd_settime(2), its ticks with TFD_IOC_SET_TICKS.
package enum TimerFdDescriptor: AnonymousInodeKind {
    package static let types: [Ccimg_V1_HandleType] = [.timerfd]
    package static let links = ["anon_inode:[timerfd]"]

    package static func capture(_ probe: DescriptorProbe, into h: inout Ccimg_V1_Handle,
                                _ context: inout DescriptorCaptureContext) throws(SystemCallError) {
        var t = Ccimg_V1_TimerFd()
        t.fd = h.fd
        t.objectID = h.objectID
        t.clockID = Int32(probe.field("clockid") ?? "0") ?? 0
        t.ticks = UInt64(probe.field("ticks") ?? "0") ?? 0
        t.settimeFlags = Int32(probe.field("settime flags") ?? "0", radix: 8) ?? 0
        t.valueNs = ProcFS.parseTimespecPair(probe.field("it_value") ?? "") ?? 0
        t.intervalNs = ProcFS.parseTimespecPair(probe.field("it_interval") ?? "") ?? 0
        context.result.table.attach(t)
    }

    package static func restore(_ h: Ccimg_V1_Handle, _ context: inout DescriptorRestoreContext) throws(StateFailure) -> UInt64? {
        guard let t = context.table.timerfds[h.objectID] else { throw .state(StateError(.unsupported, "fd \(h.fd): timerfd without its state")) }
        let nonblock = UInt64(h.openFlags & DescriptorFlags.O_NONBLOCK)
        let fd = try context.call("timerfd_create", X86Syscall.timerfdCreate, [UInt64(t.clockID), nonblock])
        if t.valueNs > 0 {
            let address = try context.put(TimerSpec(intervalNanoseconds: t.intervalNs, valueNanoseconds: t.valueNs).encoded)
            try context.call("timerfd_settime", X86Syscall.timerfdSettime, [fd, 0, address, 0])
        }
        if t.ticks > 0 {
            // TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE); without it the expirations are lost.
            var ticks: [UInt8] = []
            ticks.appendLE(t.ticks)
            let address = try context.put(ticks)
            if (try? context.call("ioctl(TFD_IOC_SET_TICKS)", X86Syscall.ioctl, [fd, Linux.TFD_IOC_SET_TICKS, address])) == nil {
                context.warn("fd \(h.fd): \(t.ticks) timerfd expirations not yet read are lost")
            }
        }
        return fd
    }
}

import CheckpointImage
import LinuxKernel

/// The file descriptors and the open file descriptions behind them (spec/image-format.md
/// §5.3 handles in the 1.1 open-files layout, sync objects, sockets, console), as one
/// kind of ``StateKinds`` (spec/decisions/0019-kinds-and-steps.md, 0018-open-file-descriptions.md).
/// Each kind of descriptor is its own ``DescriptorKind`` in ``DescriptorTable/kinds``;
/// this kind runs the table: captured from outside after injection (/proc/PID/fd and
/// fdinfo, kcmp, pidfd_getfd), restored in the step "recreate the file descriptors".
package enum DescriptorsKind: StateKind {
    package static let name = "file descriptors"
    package static let sections: [SectionKind] = [.handles, .syncObjects, .sockets, .console]

    /// Every descriptor (``DescriptorTable/capture(pid:pidfd:)``) into the records; the
    /// timers' fields of the sync objects stay the timers kind's.
    package static func captureAfterInjection(_ target: CaptureTarget, into records: inout CapturedRecords) throws(StateFailure) {
        let handles: CapturedDescriptors
        do throws(SystemCallError) { handles = try DescriptorTable.capture(pid: target.pid, pidfd: target.pidfd) } catch {
            throw .system(error)
        }
        records.warnings += handles.warnings
        var sync = handles.sync
        sync.intervalTimers = records.sync.intervalTimers
        sync.posixTimers = records.sync.posixTimers
        records.sync = sync
        records.handles = handles.handleTable
        records.sockets = handles.sockets
        records.console = handles.console()
        records.unrestorable += handles.table.objects.compactMap { DescriptorTable.kind(for: $0.type).cannotRestore($0) }
    }

    /// The image's descriptors (``DescriptorRestore``), through the context's remote calls.
    package static func restoreDescriptors(_ files: OpenFileTable, into context: inout RestoreContext) throws(StateFailure) {
        var descriptors = DescriptorRestore(table: files, remote: context.remote)
        defer {
            context.remote = descriptors.remote
            context.warnings += descriptors.warnings
        }
        try descriptors.restore()
    }
}

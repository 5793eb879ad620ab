import CCheckpointKernel

/// kcmp(2): whether two descriptors of processes name the same kernel object.
package enum Kcmp {
    /// kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): whether descriptor `fd1` of `pid1` and
    /// `fd2` of `pid2` share one open file description (dup, dup2, fork inheritance).
    /// Throws ENOSYS on a kernel without CONFIG_KCMP, EPERM without ptrace access,
    /// EBADF when a descriptor is closed.
    package static func sameFile(pid1: Int32, _ fd1: Int32, pid2: Int32, _ fd2: Int32) throws(SystemCallError) -> Bool {
        try kernelCall("kcmp(KCMP_FILE, \(fd1), \(fd2))", cc_kcmp_file(pid1, pid2, fd1, fd2)) == 0
    }
}

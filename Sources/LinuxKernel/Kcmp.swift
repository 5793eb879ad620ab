import CCheckpointKernel

/// kcmp(2): whether two descriptors of processes name the same kernel object.
package enum Kcmp {
    /// How kcmp(2) orders two objects: the kernel compares (obfuscated) pointers.
    package enum Order: Sendable {
        /// The same object (result 0).
        case same
        /// The first comes before the second (result 1).
        case less
        /// The first comes after the second (result 2).
        case greater
        /// Different, without an ordering (result 3).
        case unordered
    }

    /// kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): the order of the open file descriptions
    /// behind descriptor `fd1` of `pid1` and `fd2` of `pid2`; `.same` when they are one
    /// (dup, dup2, fork inheritance). Throws ENOSYS on a kernel without CONFIG_KCMP,
    /// EPERM without ptrace access, EBADF when a descriptor is closed.
    package static func compareFiles(pid1: Int32, _ fd1: Int32, pid2: Int32, _ fd2: Int32) throws(SystemCallError) -> Order {
        switch try kernelCall("kcmp(KCMP_FILE, \(fd1), \(fd2))", cc_kcmp_file(pid1, pid2, fd1, fd2)) {
        case 0: .same
        case 1: .less
        case 2: .greater
        default: .unordered
        }
    }

    /// kcmp(pid1, pid2, KCMP_FILE, fd1, fd2) == 0: whether the two descriptors share
    /// one open file description.
    package static func sameFile(pid1: Int32, _ fd1: Int32, pid2: Int32, _ fd2: Int32) throws(SystemCallError) -> Bool {
        try compareFiles(pid1: pid1, fd1, pid2: pid2, fd2) == .same
    }
}

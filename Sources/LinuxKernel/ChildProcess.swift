#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs another program and waits for it: posix_spawnp(3) (found on $PATH), then
/// waitpid(2) for that child alone. For tools (benchmarks) that drive command-line programs.
package enum ChildProcess {
    /// Runs `arguments[0]` with `arguments`, its standard output to /dev/null when
    /// `discardOutput`, and returns its exit status (128 + the signal when a signal ended it).
    package static func run(_ arguments: [String], discardOutput: Bool = false) throws(SystemCallError) -> Int32 {
        precondition(!arguments.isEmpty, "a program to run")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if discardOutput { posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0) }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
        guard spawned == 0 else { throw SystemCallError("posix_spawnp(\(arguments[0]))", errno: spawned) }
        var status: Int32 = 0
        guard retryingOnInterrupt({ waitpid(pid, &status, 0) }) == pid else {
            throw SystemCallError("waitpid(\(pid))", errno: SystemCallError.lastErrno)
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

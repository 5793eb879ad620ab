@testable import CheckpointCapture
@testable import LinuxKernel
import Foundation
import Testing
import TestSupport

/// Where parked calls run (decisions 0014, 0015): the `syscall; ret` and signal-return
/// gadgets ccpm reads from the file of a process's C library, before it stops the
/// process, are where that process has them.
@Suite struct ParkingGadgetsTests {
    @Test func gadgetsReadFromTheCLibraryFileAreInTheProcess() throws {
        let pid = try CaptureSupport.spawn("/bin/sleep", ["30"], stdout: nil, stderr: nil)
        defer {
            kill(pid, SIGKILL)
            _ = try? CaptureSupport.wait(pid)
        }
        // Until the dynamic loader has mapped the C library.
        var maps: [ProcFS.MapsEntry] = []
        #expect(CaptureSupport.waitUntil(seconds: 5) {
            maps = ProcFS.parseMaps((try? ProcFS.read("/proc/\(pid)/maps")) ?? "")
            return maps.contains { $0.execute && ParkingGadgets.isCLibrary($0) }
        })
        let library = try #require(maps.first { $0.execute && $0.read && ParkingGadgets.isCLibrary($0) })

        let offsets = try #require(ParkingGadgets.libraryOffsets(library), "both gadgets in \(library.path)")
        let fromFile = ParkingGadgets(syscallReturn: library.start + (offsets.syscallReturn - library.offset),
                                      restorer: library.start + (offsets.restorer - library.offset))
        #expect(fromFile.holds(pid: pid))
        // The same first occurrences a search of the process's memory finds.
        let searched = try #require(ParkingGadgets.search(pid: pid, maps: maps))
        #expect(fromFile.syscallReturn == searched.syscallReturn && fromFile.restorer == searched.restorer)
        let found = try #require(ParkingGadgets.find(pid: pid, maps: maps))
        #expect(found.syscallReturn == fromFile.syscallReturn && found.restorer == fromFile.restorer)

        // A file that is not the one mapped (another inode at that path) gives nothing.
        var other = library
        other.inode &+= 1
        #expect(ParkingGadgets.libraryOffsets(other) == nil)
    }
}

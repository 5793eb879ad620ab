import CheckpointCapture
import CheckpointImage
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// End-to-end captures of real processes (issue #3): the program sets up known
/// state, we capture it from outside, and check the image as a user would.
@Suite(.serialized, .enabled(if: Gate.tracing, "needs root, or kernel.yama.ptrace_scope 0, to trace processes that are not ours"))
struct CaptureTests {
    @Test func capturesKnownStateAndLeavesTheProgramUndisturbed() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let program = try CaptureSupport.program("state")
        // An undisturbed run for reference, and one we checkpoint midway.
        let reference = try CaptureSupport.Target(program, ["30", "\(dir)/ref.txt"], in: dir)
        let target = try CaptureSupport.Target(program, ["30", "\(dir)/file.txt"], in: dir)
        let markerAddress = UInt64(target.ready[2].dropFirst(2), radix: 16)!
        let image = "\(dir)/state.ccimg"
        var options = CheckpointOptions()
        options.leaveRunning = true
        let summary = try Checkpointer.checkpoint(pid: target.pid, to: try ImageOutput(path: image), options: options)
        #expect(summary.threads == 5)
        #expect(target.state != nil && target.state != "t" && target.state != "T", "the program must run on")

        let chain = try ImageChain.open(path: image)
        let reader = chain.top
        let process = try #require(try reader.section(.process, as: Ccimg_V1_ProcessInfo.self))
        #expect(process.pid == target.pid)
        #expect(process.cmdline == [program, "30", "\(dir)/file.txt"])
        #expect(process.exePath == program)

        // Threads and their states.
        let threads = try #require(try reader.section(.threads, as: Ccimg_V1_ThreadList.self)).threads
        #expect(threads.count == 5)
        #expect(threads.first?.tid == target.pid)
        let calls = Set(threads.filter { $0.state == .inSyscall }.map(\.syscall.number))
        // read and futex waits; the sleeper is in clock_nanosleep (230), or in restart_syscall (219)
        // when an earlier stop already interrupted its sleep once.
        #expect(calls.isSuperset(of: [0, 202]) && !calls.isDisjoint(with: [230, 219]), "syscalls: \(calls)")
        #expect(threads.contains { $0.state == .running })
        #expect(threads.allSatisfy { $0.generalRegisters.count == 27 * 8 && $0.xsave.count >= 576 && $0.fsBase != 0 })
        #expect(threads[0].pendingSignals.contains { $0.signo == SIGUSR2 }, "SIGUSR2 is blocked and pending")
        #expect(threads[0].signalMask & (1 << UInt64(SIGUSR2 - 1)) != 0)
        #expect(threads.allSatisfy { $0.tidAddress != 0 })

        // Signals.
        let signals = try #require(try reader.section(.signals, as: Ccimg_V1_SignalDispositions.self))
        let usr1 = try #require(signals.actions.first { $0.signo == SIGUSR1 })
        #expect(usr1.handler > 1, "SIGUSR1 has a handler address")

        // Handles and synchronization objects.
        let handles = try #require(try reader.section(.handles, as: Ccimg_V1_HandleTable.self)).handles
        let file = try #require(handles.first { $0.path == "\(dir)/file.txt" })
        #expect(file.type == .regular && file.offset == 1234)
        #expect(handles.contains { $0.type == .pipe && $0.unread == Data("unread bytes in the pipe".utf8) })
        // The inotify watch on the file's directory: its inode and mask (IN_CREATE|IN_DELETE) from fdinfo.
        var dirStat = stat()
        #expect(stat(dir, &dirStat) == 0)
        let inotify = try #require(handles.first { $0.type == .inotify })
        let dirInode = "ino:" + String(dirStat.st_ino, radix: 16)
        #expect(inotify.fdinfo.contains(dirInode) && inotify.fdinfo.contains("mask:300"), "\(inotify.fdinfo)")
        let sync = try #require(try reader.section(.syncObjects, as: Ccimg_V1_SyncObjects.self))
        #expect(sync.eventfds.map(\.counter) == [7])
        #expect(sync.timerfds.map(\.intervalNs) == [500_000_000])
        #expect(sync.timerfds.allSatisfy { $0.valueNs > 3_500_000_000_000 && $0.clockID == CLOCK_MONOTONIC })

        // Memory: the .data marker at its address, in an elf-data VMA of the program.
        let marker = Array("CC-DATA-MARKER: computing communities .data".utf8)
        #expect(try chain.readMemory(address: markerAddress, length: UInt64(marker.count)) == marker)
        let vma = reader.memoryMap[try #require(reader.vmaIndex(containing: markerAddress))]
        #expect(vma.role == .elfData && vma.object == program)
        #expect(reader.memoryMap.contains { $0.role == .mainStack })
        #expect(reader.memoryMap.filter { $0.role == .threadStack }.count == 4)
        #expect(reader.memoryMap.contains { $0.role == .vdso })
        #expect(ImageVerifier.verify(path: image, deep: true).isValid)

        #expect(process.mm.brk >= process.mm.startBrk && process.mm.startBrk != 0)

        // The CLI agrees: dump --json, verify --deep, and extract the marker.
        let ccimg = CaptureSupport.tool("ccimg")
        let dump = try CaptureSupport.run(ccimg, ["dump", "--json", image])
        #expect(dump.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any]
        #expect(json?["schema"] as? String == "ccimg.dump/1")
        #expect((json?["process"] as? [String: Any])?["pid"] as? Int == Int(target.pid))
        #expect(((json?["threads"] as? [String: Any])?["threads"] as? [Any])?.count == 5)
        let vmas = ((json?["memory"] as? [String: Any])?["vmas"] as? [[String: Any]]) ?? []
        #expect(vmas.contains { $0["role"] as? String == "elf-data" && $0["object"] as? String == program })
        #expect(vmas.contains { $0["role"] as? String == "heap" })
        #expect(try CaptureSupport.run(ccimg, ["verify", "--deep", image]).status == 0)
        let extracted = "\(dir)/marker.bin"
        let r = try CaptureSupport.run(ccimg, ["extract", image, "--memory", "0x\(String(markerAddress, radix: 16))+\(marker.count)", "-o", extracted])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: extracted))) == marker)

        // Output unchanged by the checkpoint.
        #expect(target.waitFor("DONE") && reference.waitFor("DONE"))
        let strip = { (text: String) in text.split(separator: "\n").filter { !$0.hasPrefix("READY") }.joined(separator: "\n") }
        #expect(strip(target.output) == strip(reference.output))
        #expect(target.output.contains("offset=1234 usr2-pending=1"))
    }

    @Test func stoppedProcessIsRecordedStoppedAndStaysStopped() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["40", "\(dir)/f.txt"], in: dir)
        kill(target.pid, SIGSTOP)
        for _ in 0..<100 where target.state != "T" { usleep(10_000) }
        #expect(target.state == "T")
        var options = CheckpointOptions()
        options.leaveRunning = true
        _ = try Checkpointer.checkpoint(pid: target.pid, to: try ImageOutput(path: "\(dir)/s.ccimg"), options: options)
        let threads = try #require(try ImageReader(path: "\(dir)/s.ccimg").section(.threads, as: Ccimg_V1_ThreadList.self)).threads
        #expect(threads.allSatisfy { $0.state == .stopped })
        usleep(50_000)
        #expect(target.state == "T", "still stopped after the capture")
        kill(target.pid, SIGCONT)
        #expect(target.waitFor("DONE"))
    }

    @Test func migrationCaptureEndsTheProcessAfterTheImageIsSafe() throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("state"), ["400", "\(dir)/f.txt"], in: dir)
        let r = try CaptureSupport.run(CaptureSupport.tool("ccpm"), ["checkpoint", "\(target.pid)", "-o", "\(dir)/m.ccimg"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("process killed"))
        for _ in 0..<100 where target.state != nil { usleep(10_000) }
        #expect(target.state == nil, "the process is gone")
        #expect(ImageVerifier.verify(path: "\(dir)/m.ccimg", deep: true).isValid)
    }

    @Test(arguments: [false, true])
    func incrementalImageStoresOnlyTheTouchedPages(kernelTracking: Bool) throws {
        let dir = try CaptureSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = try CaptureSupport.Target(try CaptureSupport.program("dirty"), ["256"], in: dir)
        let buffer = UInt64(target.ready[2].dropFirst(2), radix: 16)!
        let touched = (0..<65536).filter { $0 % 100 == 0 }.count    // 656 pages, 1%
        var options = CheckpointOptions()
        options.leaveRunning = true
        options.track = kernelTracking
        let full = try Checkpointer.checkpoint(pid: target.pid, to: try ImageOutput(path: "\(dir)/full.ccimg"), options: options)
        #expect(full.trackingMode == "full")
        kill(target.pid, SIGUSR1)
        #expect(target.waitFor("TOUCHED 1"))
        options.parentPath = "\(dir)/full.ccimg"
        let increment = try Checkpointer.checkpoint(pid: target.pid, to: try ImageOutput(path: "\(dir)/inc.ccimg"), options: options)
        #expect(increment.trackingMode == (kernelTracking ? "uffd-wp" : "hash-compare"))
        if kernelTracking {
            // Only the written pages were read: the rest is inherited without reading.
            #expect(increment.memoryRead < UInt64(touched + 200) * 4096)
            #expect((increment.image.pages[.inherited] ?? 0) > 64000)
        }
        let storedFull = full.image.pages[.stored] ?? 0
        let storedIncrement = increment.image.pages[.stored] ?? 0
        #expect(storedFull >= 65536)
        #expect(storedIncrement >= UInt64(touched) && storedIncrement < UInt64(touched) + 200, "about 1% stored: \(storedIncrement)")
        #expect(increment.image.fileBytes * 20 < full.image.fileBytes)

        let a = try ImageChain.open(path: "\(dir)/full.ccimg"), b = try ImageChain.open(path: "\(dir)/inc.ccimg")
        let diff = try ImageDiff.compare(a, b)
        guard case .array(let pages)? = diff.report["memory"]?["pages"],
              let entry = pages.first(where: { $0["start"] == .hex(buffer) }) else {
            Issue.record("diff does not name the buffer")
            return
        }
        #expect(entry["changedPages"] == .count(touched))
        guard case .array(let ranges)? = entry["ranges"] else {
            Issue.record("the diff of the buffer has no ranges: \(entry)")
            return
        }
        let starts = ranges.compactMap { r -> UInt64? in if case .string(let s)? = r["start"] { UInt64(s.dropFirst(2), radix: 16) } else { nil } }
        let expected: [UInt64] = stride(from: 0, to: 65536, by: 100).map { buffer + UInt64($0) * 4096 }
        #expect(starts == expected)
        #expect(ImageVerifier.verify(path: "\(dir)/inc.ccimg", deep: true).isValid)
    }
}

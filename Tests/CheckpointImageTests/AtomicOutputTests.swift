import Foundation
import Testing
@_spi(Fixtures) @testable import CheckpointImage
import ImageFixtures
#if canImport(Glibc)
import Glibc
#endif

/// §2 Output: a file appears complete or not at all; a stream gets the same bytes.
@Suite struct AtomicOutputTests {
    static func smallModel(seed: UInt64) -> MemoryModel {
        var g = SeededGenerator(seed: seed)
        return MemoryModel.random(&g, pageSize: 4096, vmaCount: 3, maxPages: 30)
    }

    static func fixedOptions() -> ImageWriterOptions {
        var o = ImageWriterOptions()
        var g = SeededGenerator(seed: 77)
        o.uuid = ImageUUID.deterministic(using: &g)
        o.createdUnixNanoseconds = 1_700_000_000_123_456_789
        o.pagesPerFrame = 4
        return o
    }

    @Test func droppedOutputLeavesNothing() throws {
        let dir = try TempDir("dropped")
        defer { dir.remove() }
        do {
            let output = try ImageOutput(path: dir.file("a.ccimg"))
            // While open, only the hidden temporary file exists (§2.7).
            let names = dir.contents()
            #expect(names.count == 1)
            #expect(names.first?.hasPrefix(".a.ccimg.tmp-") == true, "\(names)")
            _ = consume output
        }
        #expect(dir.contents() == [])
    }

    @Test func abandonedWriterLeavesNothing() throws {
        let dir = try TempDir("abandoned")
        defer { dir.remove() }
        let model = Self.smallModel(seed: 1)
        do {
            let writer = try ImageWriter(output: try ImageOutput(path: dir.file("a.ccimg")))
            var p = Ccimg_V1_ProcessInfo(); p.pid = 1
            try writer.addSection(.process, p)
            try model.write(to: writer)
            #expect(!fileExists(dir.file("a.ccimg")), "nothing at the target before finish()")
            #expect(dir.contents().count == 1)
        }
        #expect(dir.contents() == [])
    }

    @Test func abandonedRewriteKeepsTheOldFile() throws {
        let dir = try TempDir("rewrite")
        defer { dir.remove() }
        let path = dir.file("a.ccimg")
        try writeImage(Self.smallModel(seed: 1), to: path)
        let before = try readBytes(path)
        do {
            let writer = try ImageWriter(output: try ImageOutput(path: path))
            var p = Ccimg_V1_ProcessInfo(); p.pid = 2
            try writer.addSection(.process, p)
        }
        #expect(try readBytes(path) == before)
        #expect(dir.contents() == ["a.ccimg"])
        // A finished rewrite replaces it whole.
        let model = Self.smallModel(seed: 2)
        let summary = try writeImage(model, to: path)
        #expect(try ImageReader(path: path).header.uuid == summary.uuid)
        #expect(dir.contents() == ["a.ccimg"])
    }

    @Test func finishedImageIsTheOnlyFile() throws {
        let dir = try TempDir("finished")
        defer { dir.remove() }
        let summary = try writeImage(Self.smallModel(seed: 3), to: dir.file("a.ccimg"))
        #expect(dir.contents() == ["a.ccimg"])
        #expect(summary.fileBytes == UInt64(try readBytes(dir.file("a.ccimg")).count))
    }

    @Test func rawOutputIsWrittenAtomically() throws {
        let dir = try TempDir("raw")
        defer { dir.remove() }
        var output = try ImageOutput(path: dir.file("mem.bin"))
        try output.writeRaw(Array("hello memory".utf8))
        #expect(!fileExists(dir.file("mem.bin")))
        try output.commit()
        #expect(try readBytes(dir.file("mem.bin")) == Array("hello memory".utf8))
        #expect(dir.contents() == ["mem.bin"])
    }

    @Test func missingDirectoryIsAnIOError() throws {
        let dir = try TempDir("nodir")
        defer { dir.remove() }
        let path = dir.file("no/such/dir/a.ccimg")
        let e = thrown { _ = try ImageOutput(path: path) } as? ImageError
        #expect(e?.code == .io)
        #expect(e?.path == path)
        #expect(e?.code.exitStatus == 2)
        let e2 = thrown { try writeImage(Self.smallModel(seed: 1), to: path) } as? ImageError
        #expect(e2?.code == .io)
        #expect(dir.contents() == [])
    }

    /// Reads everything from `fd` on a thread of its own until end of file.
    final class PipeDrain: @unchecked Sendable {
        private var bytes: [UInt8] = []
        private let done = DispatchSemaphore(value: 0)

        init(fd: Int32) {
            signal(SIGPIPE, SIG_IGN)
            let thread = Thread { [self] in
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    self.bytes += buffer[0..<n]
                }
                self.done.signal()
            }
            thread.start()
        }

        func wait() -> [UInt8] {
            done.wait()
            return bytes
        }
    }

    /// Writes `bytes` into `fd` on a thread of its own, then closes `fd`.
    static func feed(_ bytes: [UInt8], to fd: Int32) -> DispatchSemaphore {
        signal(SIGPIPE, SIG_IGN)  // a reader that stops early gives EPIPE, not a dead test process
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                offset += n
            }
            close(fd)
            done.signal()
        }
        thread.start()
        return done
    }

    static func writeStreamed(_ model: MemoryModel, options: ImageWriterOptions, to fd: Int32) throws -> ImageWriteSummary {
        let writer = try ImageWriter(output: ImageOutput(streamingTo: fd), options: options)
        var p = Ccimg_V1_ProcessInfo(); p.pid = 777; p.comm = "test"; p.cmdline = ["test", "--run"]
        try writer.addSection(.process, p)
        try model.write(to: writer)
        return try writer.finish()
    }  // the writer, and its duplicate of fd, go away here

    @Test func streamingToAPipeGivesTheSameVerifiableImage() throws {
        let model = Self.smallModel(seed: 9)
        let options = Self.fixedOptions()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let drain = PipeDrain(fd: fds[0])
        let summary = try Self.writeStreamed(model, options: options, to: fds[1])
        close(fds[1])
        let streamed = drain.wait()
        close(fds[0])
        #expect(UInt64(streamed.count) == summary.fileBytes)

        // The same image written to a file is the same bytes (§2.5: no seeks, no rewrites).
        let dir = try TempDir("stream")
        defer { dir.remove() }
        try writeImage(model, to: dir.file("file.ccimg"), options: options)
        #expect(try readBytes(dir.file("file.ccimg")) == streamed)

        // Verified from a temp file …
        try writeBytes(streamed, to: dir.file("streamed.ccimg"))
        let fileReport = ImageVerifier.verify(path: dir.file("streamed.ccimg"), deep: true)
        #expect(fileReport.isValid, "\(fileReport.problems)")
        // … and from a second pipe.
        var second: [Int32] = [0, 0]
        #expect(pipe(&second) == 0)
        let fed = Self.feed(streamed, to: second[1])
        let pipeReport = ImageVerifier.verify(streamFrom: second[0], deep: true)
        close(second[0])
        fed.wait()
        #expect(pipeReport.isValid, "\(pipeReport.problems)")
        #expect(pipeReport.path == "-")
        #expect(pipeReport.storedPages == fileReport.storedPages)
        #expect(pipeReport.pagesHashed == fileReport.pagesHashed)
        #expect(pipeReport.sections == 3)
    }

    @Test func verifyingStraightFromTheWritersPipe() throws {
        // The writer on this thread, the verifier reading the pipe's other end on another.
        let model = Self.smallModel(seed: 10)
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        final class Box: @unchecked Sendable { var report: VerifyReport? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let readEnd = fds[0]
        let thread = Thread {
            box.report = ImageVerifier.verify(streamFrom: readEnd, deep: true)
            done.signal()
        }
        thread.start()
        _ = try Self.writeStreamed(model, options: Self.fixedOptions(), to: fds[1])
        close(fds[1])
        done.wait()
        close(fds[0])
        let report = try #require(box.report)
        #expect(report.isValid, "\(report.problems)")
        #expect(report.storedPages == UInt64(model.distinctNonZeroPages.count))
    }

    @Test func streamVerifyRejectsTrailingGarbageAndCuts() throws {
        let model = Self.smallModel(seed: 11)
        let dir = try TempDir("stream-bad")
        defer { dir.remove() }
        try writeImage(model, to: dir.file("a.ccimg"))
        let bytes = try readBytes(dir.file("a.ccimg"))
        for (variant, expected) in [(bytes + [0], ImageError.Code.structural), (Array(bytes.dropLast(1)), .truncated),
                                    (Array(bytes.prefix(bytes.count / 2)), .truncated)] {
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let fed = Self.feed(variant, to: fds[1])
            let report = ImageVerifier.verify(streamFrom: fds[0], deep: false)
            close(fds[0])
            fed.wait()
            #expect(report.problems.first?.code == expected, "\(report.problems)")
        }
    }

    @Test func streamReaderReadsAPipeFrontToBack() throws {
        let model = Self.smallModel(seed: 12)
        var options = Self.fixedOptions()
        options.pagesPerFrame = 3
        let dir = try TempDir("stream-reader")
        defer { dir.remove() }
        try writeImage(model, to: dir.file("a.ccimg"), options: options)
        let bytes = try readBytes(dir.file("a.ccimg"))
        let reader = try ImageReader(path: dir.file("a.ccimg"))

        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let fed = Self.feed(bytes, to: fds[1])
        defer { close(fds[0]); fed.wait() }
        let stream = try ImageStreamReader(fd: fds[0])
        #expect(stream.header.uuid == options.uuid)
        var kinds: [UInt32] = []
        var pages: [UInt8] = []
        var index: Ccimg_V1_Index?
        loop: while true {
            switch try stream.next() {
            case .section(let kind, _, _): kinds.append(kind)
            case .frame(let first, let framePages):
                #expect(first == UInt64(pages.count / 4096))
                pages += framePages
            case .end(let i):
                index = i
                break loop
            }
        }
        #expect(kinds == [SectionKind.process, .memoryMap, .pageMap].map(\.rawValue))
        #expect(index == reader.index)
        #expect(UInt64(pages.count / 4096) == reader.index.storedPages)
        for o in 0..<reader.index.storedPages {
            let start = Int(o) * 4096
            #expect(Array(pages[start..<(start + 4096)]) == (try reader.storedPage(o)))
        }
    }
}

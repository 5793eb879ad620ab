import Testing
import Foundation
@testable import CheckpointImage

@Test func smokeRoundTrip() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cc-smoke-\(UUID())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/a.ccimg"
    let writer = try ImageWriter(output: try ImageOutput(path: path))
    var p = Ccimg_V1_ProcessInfo(); p.pid = 42; p.cmdline = ["demo"]
    try writer.addSection(.process, p)
    var vma = Ccimg_V1_Vma(); vma.start = 0x10000; vma.end = 0x10000 + 4096 * 600; vma.prot = 3; vma.role = .heap
    try writer.beginVma(vma)
    var bytes = [UInt8](repeating: 0, count: 4096 * 600)
    for i in 0..<300 * 4096 { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i / 4096) }
    try writer.appendPages(bytes)
    let summary = try writer.finish()
    print(summary)
    let r = try ImageReader(path: path)
    #expect(r.memoryMap.count == 1)
    let chain = try ImageChain(images: [r])
    let back = try chain.readMemory(address: 0x10000, length: UInt64(bytes.count))
    #expect(back == bytes)
    let rep = ImageVerifier.verify(path: path, deep: true)
    #expect(rep.isValid, "\(rep.problems)")
}

import ImageFixtures
import LinuxKernel

// gen-fixtures [ROOT]: writes the golden images (ROOT/1.0) and the damaged corpus (ROOT/damaged).
let root = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "fixtures/images"
do {
    try FixtureSet.writeGolden(into: "\(root)/1.0")
    try OpenFilesFixtures.writeGolden(into: "\(root)/1.1")
    try FixtureSet.writeDamaged(into: "\(root)/damaged", goldenDirectory: "\(root)/1.0")
    StandardStream.output.write("wrote \(root)/1.0, \(root)/1.1 and \(root)/damaged\n")
} catch {
    StandardStream.error.write("gen-fixtures: error: \(error)\n")
    Host.exit(1)
}

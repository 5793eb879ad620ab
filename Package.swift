// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "ComputingCommunities",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "CheckpointImage", targets: ["CheckpointImage"]),
        .library(name: "CheckpointCapture", targets: ["CheckpointCapture"]),
        .library(name: "CheckpointRestore", targets: ["CheckpointRestore"]),
        .executable(name: "ccimg", targets: ["ccimg"]),
        .executable(name: "ccpm", targets: ["ccpm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Without its default traits: BinaryDelimitedStreams pulls in all of Foundation (and ICU).
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // System libraries, found through pkg-config (tools/setup installs the -dev packages).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CXxhash", path: "Sources/CXxhash", pkgConfig: "libxxhash",
                       providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(name: "CLibelf", path: "Sources/CLibelf", pkgConfig: "libelf",
                       providers: [.apt(["libelf-dev"])]),
        // The only C of our own: non-variadic wrappers of ptrace, process_vm_readv,
        // pidfd, userfaultfd and PAGEMAP_SCAN that return -errno.
        .target(name: "CCheckpointKernel"),
        // The one kernel layer: with the C shim, the only code that touches libc
        // (spec/decisions/0016-one-kernel-layer.md).
        .target(
            name: "LinuxKernel",
            dependencies: [
                "CCheckpointKernel", "CLibelf",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The image format: files and threads come from LinuxKernel, nothing of ptrace.
        .target(
            name: "CheckpointImage",
            dependencies: [
                "CZstd", "CXxhash", "LinuxKernel",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "ccimg",
            dependencies: [
                "CheckpointImage", "LinuxKernel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // One home per kind of process state: its capture and its restore side by side.
        .target(
            name: "ProcessState",
            dependencies: ["CheckpointImage", "LinuxKernel"]
        ),
        .target(
            name: "CheckpointCapture",
            dependencies: ["CheckpointImage", "LinuxKernel", "ProcessState"]
        ),
        .target(
            name: "CheckpointRestore",
            dependencies: [
                "CheckpointImage", "LinuxKernel", "ProcessState",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "ccpm",
            dependencies: [
                "CheckpointCapture", "CheckpointRestore", "LinuxKernel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "ImageFixtures",
            dependencies: ["CheckpointImage", "LinuxKernel"]
        ),
        .executableTarget(
            name: "gen-fixtures",
            dependencies: ["CheckpointImage", "ImageFixtures", "LinuxKernel"],
            path: "Sources/GenFixtures"
        ),
        .executableTarget(
            name: "bench-image",
            dependencies: ["CheckpointImage", "LinuxKernel"],
            path: "Sources/BenchImage"
        ),
        .testTarget(
            name: "CheckpointImageTests",
            dependencies: ["CheckpointImage", "ImageFixtures", "LinuxKernel"]
        ),
        // The process helpers of the end-to-end test targets (spawning, building
        // fixtures/programs, gates): a library under Tests/, so that both share one copy.
        .target(
            name: "TestSupport",
            dependencies: ["CCheckpointKernel"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            // End-to-end captures of real processes, and the /proc parsers on samples.
            name: "CheckpointCaptureTests",
            dependencies: ["CheckpointCapture", "CheckpointImage", "ProcessState", "LinuxKernel", "CCheckpointKernel", "TestSupport"]
        ),
        .testTarget(
            // End-to-end restores, the one-feature programs of fixtures/programs/zdtm, and
            // the restorer's pure logic (XSAVE areas, vdso redirection).
            name: "CheckpointRestoreTests",
            dependencies: ["CheckpointRestore", "CheckpointImage", "LinuxKernel", "TestSupport"]
        ),
    ]
)

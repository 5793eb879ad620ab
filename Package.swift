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
        .target(
            name: "CheckpointImage",
            dependencies: [
                "CZstd", "CXxhash", "CCheckpointKernel",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "ccimg",
            dependencies: [
                "CheckpointImage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "CheckpointCapture",
            dependencies: ["CheckpointImage", "CCheckpointKernel", "CLibelf"]
        ),
        .target(
            name: "CheckpointRestore",
            dependencies: [
                "CheckpointImage", "CheckpointCapture", "CCheckpointKernel",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "ccpm",
            dependencies: [
                "CheckpointCapture", "CheckpointRestore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "ImageFixtures",
            dependencies: ["CheckpointImage"]
        ),
        .executableTarget(
            name: "gen-fixtures",
            dependencies: ["CheckpointImage", "ImageFixtures"],
            path: "Sources/GenFixtures"
        ),
        .executableTarget(
            name: "bench-image",
            dependencies: ["CheckpointImage"],
            path: "Sources/BenchImage"
        ),
        .testTarget(
            name: "CheckpointImageTests",
            dependencies: ["CheckpointImage", "ImageFixtures"]
        ),
        .testTarget(
            // End-to-end runs on real processes: capture, and restore (they share the process helpers).
            name: "CheckpointCaptureTests",
            dependencies: ["CheckpointCapture", "CheckpointRestore", "CheckpointImage", "CCheckpointKernel"]
        ),
    ]
)

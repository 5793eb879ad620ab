// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "ComputingCommunities",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "CheckpointImage", targets: ["CheckpointImage"]),
        .executable(name: "ccimg", targets: ["ccimg"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // System libraries, found through pkg-config (tools/setup installs the -dev packages).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CXxhash", path: "Sources/CXxhash", pkgConfig: "libxxhash",
                       providers: [.apt(["libxxhash-dev"])]),
        .target(
            name: "CheckpointImage",
            dependencies: [
                "CZstd", "CXxhash",
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
    ]
)

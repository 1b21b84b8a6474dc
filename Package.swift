// swift-tools-version:5.9
import PackageDescription

// One target per layer; each depends only on the layers beneath it.
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "dginstyle",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "dginstyle", targets: ["dginstyle"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        // AVX-512 matrix-multiply kernels, chosen at run time (see Sources/CDGKernels/include/dg_kernels.h).
        // -ffp-contract=off in every configuration: no a * b + c fused into an fma the Swift code does
        // not do, so the C and Swift paths give the same bits (the kernels' fmas are explicit).
        .target(name: "CDGKernels", cSettings: [.unsafeFlags(["-ffp-contract=off"]),
                                                .unsafeFlags(["-O3"], .when(configuration: .release))]),
        .target(name: "DGTensor", dependencies: ["CBLAS", "CDGKernels"], swiftSettings: optimize),
        .target(name: "DGAutograd", dependencies: ["DGTensor"], swiftSettings: optimize),
        .target(name: "DGLayers", dependencies: ["DGTensor", "DGAutograd"], swiftSettings: optimize),
        .target(name: "DGCheckpoint", dependencies: ["DGTensor", "CZstd"], swiftSettings: optimize),
        .target(name: "DGModels", dependencies: ["DGTensor", "DGLayers", "DGCheckpoint"], swiftSettings: optimize),
        .target(name: "DGData", dependencies: ["DGTensor", "DGCheckpoint", "CPNG"], swiftSettings: optimize),
        .target(name: "DGDiffusion", dependencies: ["DGTensor", "DGCheckpoint", "DGModels", "DGData"], swiftSettings: optimize),
        .target(name: "DGTraining", dependencies: ["DGTensor", "DGLayers", "DGCheckpoint", "DGModels", "DGDiffusion", "DGData"], swiftSettings: optimize),
        .executableTarget(name: "dginstyle", dependencies: [
            "DGTensor", "DGCheckpoint", "DGLayers", "DGModels", "DGDiffusion", "DGData", "DGTraining",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: optimize),
        .testTarget(name: "DGTensorTests", dependencies: ["DGTensor"]),
        .testTarget(name: "DGAutogradTests", dependencies: ["DGAutograd"]),
        .testTarget(name: "DGCheckpointTests", dependencies: ["DGCheckpoint", "DGModels"]),
        .testTarget(name: "DGModelsTests", dependencies: ["DGModels", "DGCheckpoint"]),
        .testTarget(name: "DGDiffusionTests", dependencies: ["DGDiffusion", "DGModels", "DGCheckpoint", "DGTensor", "DGData"]),
        .testTarget(name: "DGDataTests", dependencies: ["DGData", "DGTensor"]),
        .testTarget(name: "DGTrainingTests", dependencies: ["DGTraining", "DGLayers", "DGModels", "DGDiffusion", "DGCheckpoint", "DGData"]),
        .testTarget(name: "CommandTests", dependencies: ["dginstyle"]),
    ]
)

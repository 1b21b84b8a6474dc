// swift-tools-version:5.9
import PackageDescription

// One target per layer; each depends only on the layers beneath it.
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "dginstyle",
    // Linux only: the system libraries come from Debian packages and the code calls Glibc.
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
        .target(name: "CDGKernels", cSettings: [.unsafeFlags(["-O3"], .when(configuration: .release))]),
        // JSON, atomic writes, the error type, the config reader, the random generator: what
        // every layer needs and that needs no tensors.
        .target(name: "DGBase", swiftSettings: optimize),
        .target(name: "DGTensor", dependencies: ["CBLAS", "CDGKernels"], swiftSettings: optimize),
        .target(name: "DGAutograd", dependencies: ["DGTensor"], swiftSettings: optimize),
        .target(name: "DGLayers", dependencies: ["DGBase", "DGTensor", "DGAutograd"], swiftSettings: optimize),
        .target(name: "DGCheckpoint", dependencies: ["DGBase", "DGTensor", "CZstd"], exclude: ["SD1Files/NOTICE.md"],
                swiftSettings: optimize),
        .target(name: "DGModels", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint"], swiftSettings: optimize),
        .target(name: "DGData", dependencies: ["DGBase", "DGTensor", "CPNG"], swiftSettings: optimize),
        .target(name: "DGDiffusion", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels", "DGData"],
                swiftSettings: optimize),
        // What measures rather than trains or generates: the judges of the experiment.
        .target(name: "DGEval", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels",
                                               "DGData", "DGDiffusion"], swiftSettings: optimize),
        .target(name: "DGTraining", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels",
                                                   "DGDiffusion", "DGData", "DGEval"], swiftSettings: optimize),
        .executableTarget(name: "dginstyle", dependencies: [
            "DGBase", "DGTensor", "DGAutograd", "DGCheckpoint", "DGLayers", "DGModels", "DGDiffusion", "DGData", "DGEval", "DGTraining",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: optimize),
        .testTarget(name: "DGTensorTests", dependencies: ["DGBase", "DGTensor", "CBLAS"]),
        .testTarget(name: "DGAutogradTests", dependencies: ["DGBase", "DGTensor", "DGAutograd"]),
        .testTarget(name: "DGCheckpointTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGCheckpoint", "DGModels"]),
        .testTarget(name: "DGModelsTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGModels", "DGCheckpoint"]),
        .testTarget(name: "DGDiffusionTests", dependencies: ["DGBase", "DGDiffusion", "DGModels", "DGCheckpoint", "DGTensor", "DGData"]),
        .testTarget(name: "DGDataTests", dependencies: ["DGBase", "DGData", "DGTensor"]),
        .testTarget(name: "DGTrainingTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGTraining", "DGLayers", "DGModels",
                                                          "DGDiffusion", "DGCheckpoint", "DGData", "DGEval"]),
        .testTarget(name: "CommandTests", dependencies: ["DGBase", "DGCheckpoint", "DGEval", "dginstyle"]),
    ]
)

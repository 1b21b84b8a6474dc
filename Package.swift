// swift-tools-version:5.9
import PackageDescription

// One target per layer; each depends only on the layers beneath it.
//
// Release builds keep bounds checks and preconditions (-O) in every target that reads outside
// input — JSON, checkpoints, PNG and label maps, tokenizer files, configs, recipes, gen_files —
// so a parser's out-of-range index is a crash, not memory corruption. Only the numerical core
// (tensors and kernels, autograd, layers), whose inner loops run per element and read no files,
// is built -Ounchecked; docs/PERFORMANCE.md has the measurement behind the split.
let unchecked: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]
let checked: [SwiftSetting] = [.unsafeFlags(["-O", "-wmo"], .when(configuration: .release))]

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
        // -ffp-contract=off in every configuration: no a * b + c fused into an fma the Swift code does
        // not do, so the C and Swift paths give the same bits (the kernels' fmas are explicit).
        .target(name: "CDGKernels", cSettings: [.unsafeFlags(["-ffp-contract=off"]),
                                                .unsafeFlags(["-O3"], .when(configuration: .release))]),
        // JSON, atomic writes, the error type, the config reader, the random generator: what
        // every layer needs and that needs no tensors.
        .target(name: "DGBase", swiftSettings: checked),
        .target(name: "DGTensor", dependencies: ["CBLAS", "CDGKernels"], swiftSettings: unchecked),
        .target(name: "DGAutograd", dependencies: ["DGTensor", "CDGKernels"], swiftSettings: unchecked),
        .target(name: "DGLayers", dependencies: ["DGBase", "DGTensor", "DGAutograd"], swiftSettings: unchecked),
        .target(name: "DGCheckpoint", dependencies: ["DGBase", "DGTensor", "CZstd"], exclude: ["SD1Files/NOTICE.md"],
                swiftSettings: checked),
        .target(name: "DGModels", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint"], swiftSettings: checked),
        .target(name: "DGData", dependencies: ["DGBase", "DGTensor", "CPNG"], swiftSettings: checked),
        .target(name: "DGDiffusion", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels", "DGData"],
                swiftSettings: checked),
        // What measures rather than trains or generates: the judges of the experiment.
        .target(name: "DGEval", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels",
                                               "DGData", "DGDiffusion"], swiftSettings: checked),
        .target(name: "DGTraining", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGCheckpoint", "DGModels",
                                                   "DGDiffusion", "DGData", "DGEval"], swiftSettings: checked),
        .executableTarget(name: "dginstyle", dependencies: [
            "DGBase", "DGTensor", "DGAutograd", "DGCheckpoint", "DGLayers", "DGModels", "DGDiffusion", "DGData", "DGEval", "DGTraining",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: checked),
        // The fuzz targets (tools/fuzz.sh builds them with libFuzzer and ASan into .build-fuzz);
        // in a plain build this is a replayer of saved inputs, so that the harness always compiles.
        .executableTarget(name: "DGFuzz", dependencies: ["DGBase", "DGCheckpoint", "DGData", "DGDiffusion", "DGLayers", "DGModels"]),
        .testTarget(name: "DGTensorTests", dependencies: ["DGBase", "DGTensor", "CBLAS", "CDGKernels"]),
        .testTarget(name: "DGAutogradTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers"]),
        .testTarget(name: "DGCheckpointTests", dependencies: ["DGBase", "DGTensor", "DGCheckpoint", "DGModels"]),
        .testTarget(name: "DGModelsTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGLayers", "DGModels", "DGCheckpoint"]),
        .testTarget(name: "DGDiffusionTests", dependencies: ["DGBase", "DGDiffusion", "DGModels", "DGCheckpoint", "DGTensor", "DGData"]),
        .testTarget(name: "DGDataTests", dependencies: ["DGBase", "DGData", "DGTensor"]),
        .testTarget(name: "DGTrainingTests", dependencies: ["DGBase", "DGTensor", "DGAutograd", "DGTraining", "DGLayers", "DGModels",
                                                          "DGDiffusion", "DGCheckpoint", "DGData", "DGEval"]),
        .testTarget(name: "CommandTests", dependencies: ["DGBase", "DGCheckpoint", "DGData", "DGEval", "dginstyle"]),
    ]
)

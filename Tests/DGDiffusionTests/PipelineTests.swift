import DGBase
import DGCheckpoint
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGDiffusion

func scratchDirectory(_ label: String) -> String {
    let dir = NSTemporaryDirectory() + "dginstyle-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A 128 px street-like label map: sky, building, road with a sidewalk, poles and a car.
func streetLabels(width: Int = 128, height: Int = 128) -> [UInt8] {
    (0..<(width * height)).map { p in
        let (x, y) = (p % width, p / width)
        if y < height / 4 { return 10 }
        if y < height / 2 { return x % 40 < 3 ? 5 : 2 }
        if y < height * 5 / 8 { return 1 }
        if x > width / 3 && x < width / 2 && y > height * 3 / 4 { return 13 }
        return y > height - 4 && x < 8 ? 255 : 0
    }
}

final class PipelineTests: XCTestCase {
    static let pipeline: ControlNetPipeline = {
        do { return try ControlNetPipeline(pipeline: Fixture.tinySD, controlnet: Fixture.tinyControlNet) } catch {
            fatalError("cannot load the tiny pipeline: \(error)")
        }
    }()

    var pipe: ControlNetPipeline { Self.pipeline }

    func options(steps: Int = 3) -> SamplingOptions {
        var o = SamplingOptions()
        o.steps = steps
        return o
    }

    /// `dginstyle parity` on the fixture: DDIM and the whole `pipe.*` run still match.
    func testParityPasses() throws {
        let checks = try ParityRun(fixture: Fixture.root + "/sd-tiny").run()
        let failed = checks.filter { !$0.passed }
        XCTAssertTrue(failed.isEmpty, failed.map(\.line).joined(separator: "\n"))
        XCTAssertTrue(checks.contains { $0.name.contains("pipe.image") && $0.passed })
        XCTAssertTrue(checks.contains { $0.name.contains("ddim20.timesteps") && $0.passed })
    }

    /// Same seed, same bits; another seed, another image; every option changes the result.
    func testTextToImageIsReproducible() throws {
        let text = pipe.encodeText(prompt: "road sidewalk building sky car", negativePrompt: "blurry")
        let cond = SemanticCondition.oneHot(ids: streetLabels(), width: 128, height: 128)
        func run(_ seed: UInt64, _ o: SamplingOptions) throws -> [Float] {
            try pipe.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: seed), options: o).image.floats
        }
        let a = try run(1, options()), b = try run(1, options())
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 3 * 128 * 128)
        XCTAssertTrue(a.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertNotEqual(a, try run(2, options()))
        var scaled = options()
        scaled.conditioningScale = 0.5
        XCTAssertNotEqual(a, try run(1, scaled))
        var eta = options()
        eta.eta = 1
        let e1 = try run(1, eta)
        XCTAssertNotEqual(a, e1)
        XCTAssertEqual(e1, try run(1, eta))
        var dpm = options()
        dpm.scheduler = .dpmSolver
        XCTAssertNotEqual(a, try run(1, dpm))
    }

    /// `sample` frees the text encoder after its one prompt: the weights are gone (file pages given
    /// back) and the image is the same as with them.
    func testReleasingTheTextEncoderKeepsTheImage() throws {
        let own = try ControlNetPipeline(pipeline: Fixture.tinySD, controlnet: Fixture.tinyControlNet)
        let text = own.encodeText(prompt: "a street")
        let cond = SemanticCondition.oneHot(ids: streetLabels(), width: 128, height: 128)
        let before = try own.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 5), options: options()).image
        own.releaseTextEncoder()
        XCTAssertTrue(own.textEncoderReleased)
        XCTAssertTrue(own.textEncoder.namedParameters().allSatisfy { $0.parameter.value == nil })
        XCTAssertFalse(own.unet.namedParameters().contains { $0.parameter.value == nil })
        let after = try own.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 5), options: options()).image
        XCTAssertEqual(before.floats, after.floats)
    }

    /// Image-to-image runs only the last int(steps * strength) steps from the noised encoding.
    func testImageToImageStrength() throws {
        let text = pipe.encodeText(prompt: "a street")
        let cond = SemanticCondition.oneHot(ids: streetLabels(), width: 128, height: 128)
        let start = try pipe.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 3), options: options()).image
        var ran: [Int] = []
        let o = options(steps: 10)
        let out = try pipe.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 4), options: o,
                                    initImage: start, strength: 0.3, onStep: { i, _ in ran.append(i) })
        XCTAssertEqual(ran, [7, 8, 9])
        XCTAssertEqual(out.image.shape, [1, 3, 128, 128])
        XCTAssertThrowsError(try pipe.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 4),
                                               options: o, initImage: start, strength: 0))
        XCTAssertThrowsError(try pipe.generate(text: text, condition: cond, height: 96, width: 128, generator: NoiseGenerator(seed: 4), options: o))
    }

    /// MRLF at 128 px: a 256 px pass over 25 windows of 16 latents (stride 4), reproducible,
    /// and different from the plain pass.
    func testMRLFRunsAndIsReproducible() throws {
        let text = pipe.encodeText(prompt: "road sidewalk building pole sky car")
        let labels = streetLabels()
        let mrlf = MRLFOptions.scaled(resolution: 128)
        var steps: [Int] = []
        let a = try pipe.generateMRLF(text: text, labels: labels, height: 128, width: 128, generator: NoiseGenerator(seed: 5),
                                      options: options(steps: 2), mrlf: mrlf, onStep: { i, n in steps.append(i); XCTAssertEqual(n, 4) })
        XCTAssertEqual(steps, [0, 1, 2, 3])
        XCTAssertEqual(a.image.shape, [1, 3, 128, 128])
        XCTAssertEqual(a.highResolution.shape, [1, 3, 256, 256])
        // Sky (32 rows = 4096 px), building (4096 minus poles), road: large; the car is not.
        XCTAssertTrue(a.largeMask[0])
        XCTAssertFalse(a.largeMask[100 * 128 + 50], "the car (about 1000 px) is under 1875 px")
        XCTAssertNotEqual(a.image.floats, a.lowResolution.floats)
        // Reproducible (with fewer windows, to keep the test short).
        var sparse = mrlf
        sparse.stride = 8
        let b = try pipe.generateMRLF(text: text, labels: labels, height: 128, width: 128, generator: NoiseGenerator(seed: 5),
                                      options: options(steps: 2), mrlf: sparse)
        let c = try pipe.generateMRLF(text: text, labels: labels, height: 128, width: 128, generator: NoiseGenerator(seed: 5),
                                      options: options(steps: 2), mrlf: sparse)
        XCTAssertEqual(b.image.floats, c.image.floats)
        XCTAssertEqual(b.lowResolution.floats, a.lowResolution.floats, "the first pass does not depend on the windows")
        XCTAssertNotEqual(b.image.floats, a.image.floats)
        // The anchor's noise level changes the fused image, not the first pass.
        var next = sparse
        next.anchorNoise = .next
        let d = try pipe.generateMRLF(text: text, labels: labels, height: 128, width: 128, generator: NoiseGenerator(seed: 5),
                                      options: options(steps: 2), mrlf: next)
        XCTAssertEqual(d.lowResolution.floats, b.lowResolution.floats)
        XCTAssertNotEqual(d.image.floats, b.image.floats)
    }

    /// Style Swap compatibility: a ControlNet of another structure is refused by name.
    func testIncompatibleControlNetIsRefused() throws {
        var config = pipe.controlnet!.config
        config.set("block_out_channels", [32, 64, 64, 128])
        XCTAssertThrowsError(try checkCompatible(controlnet: config, unet: pipe.unet.config)) { error in
            XCTAssertTrue("\(error)".contains("block_out_channels [32,64,64,128] vs [32,64,64,64]"), "\(error)")
        }
        var layers = pipe.controlnet!.config
        layers.set("layers_per_block", 1)
        XCTAssertThrowsError(try checkCompatible(controlnet: layers, unet: pipe.unet.config))
        XCTAssertNoThrow(try checkCompatible(controlnet: pipe.controlnet!.config, unet: pipe.unet.config))
    }

    /// The swap export holds the base pipeline with the ControlNet, as StableDiffusionControlNetPipeline
    /// saves it; reopened, every tensor is bit for bit its source's, in both formats.
    func testSwapExportReloadsWithIdenticalTensors() throws {
        let dir = scratchDirectory("swap")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try Checkpoint.open(Fixture.tinySD), cn = try Checkpoint.open(Fixture.tinyControlNet)
        let swapped = try StyleSwap.pipeline(base: base, controlnet: cn)
        for (format, path) in [(OutputFormat.diffusers, dir + "/swapped"), (.native, dir + "/swapped.dginstyle")] {
            try swapped.write(to: path, format: format, options: WriteOptions(progress: false))
            let back = try Checkpoint.open(path)
            XCTAssertEqual(Set(back.components.map(\.name)), ["unet", "vae", "text_encoder", "controlnet"])
            let index = try JSON.parse(bytes: XCTUnwrap(back.file("model_index.json")))
            XCTAssertEqual(index["_class_name"]?.string, "StableDiffusionControlNetPipeline")
            XCTAssertEqual(index["controlnet"], JSON.array(["diffusers", "ControlNetModel"]))
            for f in ["tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json", "controlnet/config.json", "unet/config.json"] {
                XCTAssertNotNil(back.file(f), "\(format): \(f)")
            }
            for c in back.components {
                let source = c.name == "controlnet" ? cn.component("controlnet")! : base.component(c.name)!
                XCTAssertEqual(c.source.entries.map(\.name).sorted(), source.source.entries.map(\.name).sorted())
                for e in c.source.entries {
                    let a = try c.source.tensor(e.name), b = try source.source.tensor(e.name)
                    XCTAssertEqual(a.dtype, b.dtype)
                    XCTAssertEqual(a.shape, b.shape)
                    let same = a.contiguous().withRawBytes { x in b.contiguous().withRawBytes { y in x.elementsEqual(y) } }
                    XCTAssertTrue(same, "\(format): \(c.name).\(e.name)")
                }
            }
            // The export is itself a pipeline this program samples from, ControlNet included.
            let reloaded = try ControlNetPipeline(pipeline: path)
            XCTAssertNotNil(reloaded.controlnet)
        }
        // A UNet override takes the UNet's weights and config from elsewhere.
        let other = try StyleSwap.pipeline(base: base, controlnet: cn, unet: try Checkpoint.open(Fixture.root + "/sd-tiny/tiny-sd-ldm.safetensors", options: .init(configDirectory: Fixture.tinySD)))
        XCTAssertEqual(other.component("unet")?.source.entries.count, base.component("unet")?.source.entries.count)
        // A pipeline without a ControlNet is not a ControlNet.
        XCTAssertThrowsError(try StyleSwap.pipeline(base: base, controlnet: base))
    }

    /// `--unet` replaces the pipeline's UNet (here with the same weights from the LDM file: the
    /// same images).
    func testUNetOverride() throws {
        let swapped = try ControlNetPipeline(pipeline: Fixture.tinySD, controlnet: Fixture.tinyControlNet,
                                             unet: Fixture.root + "/sd-tiny/tiny-sd-ldm.safetensors")
        XCTAssertFalse(swapped.unet === pipe.unet)
        let text = pipe.encodeText(prompt: "a street")
        let cond = SemanticCondition.oneHot(ids: streetLabels(), width: 128, height: 128)
        let a = try pipe.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 8), options: options(steps: 2))
        let b = try swapped.generate(text: text, condition: cond, height: 128, width: 128, generator: NoiseGenerator(seed: 8), options: options(steps: 2))
        XCTAssertEqual(a.image.floats, b.image.floats)
    }
}

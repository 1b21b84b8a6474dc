import DGCheckpoint
import DGData
import DGAutograd
import DGBase
import DGModels
import DGTensor
import Foundation
import XCTest
@testable import DGTraining

/// The autoencoder trainer through the shared run machinery.
final class VAETrainingTests: XCTestCase {
    func trainer(_ options: TrainingOptions, images: String) throws -> VAETrainer {
        let (models, _) = try Tiny.models()
        return try VAETrainer(vae: models.vae!, source: try ImageCropSource(folders: [images], resolution: 32, seed: 5),
                              klWeight: 1e-3, options: options)
    }

    /// N updates straight equal N/2, a checkpoint, a fresh trainer resumed from it and N/2 more,
    /// bit for bit; and the loss falls.
    func testResumesExactlyAndLearns() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Synth.writeDataset(to: dir + "/images", count: 3, width: 64, height: 48, style: .photo, seed: 2, progress: false)
        var o = Tiny.options(steps: 6, lr: 2e-3, batch: 2)
        o.schedule = LRSchedule(.cosine, warmupSteps: 1, totalSteps: 6)

        var straight = RunSettings(output: dir + "/straight")
        straight.progress = false
        straight.exportFormat = .native
        let a = try trainer(o, images: dir + "/images")
        XCTAssertTrue(try TrainingRun(trainer: a, settings: straight).run().finished)

        var first = RunSettings(output: dir + "/resumed")
        first.progress = false
        first.exportFormat = .native
        first.checkpointEvery = 3
        first.stopAfter = 3
        XCTAssertFalse(try TrainingRun(trainer: try trainer(o, images: dir + "/images"), settings: first).run().finished)
        var second = first
        second.stopAfter = nil
        second.resume = true
        let b = try trainer(o, images: dir + "/images")
        let s = try TrainingRun(trainer: b, settings: second).run()
        XCTAssertEqual(s.startStep, 3)
        XCTAssertEqual(weightBytes(a.vae), weightBytes(b.vae))
        let initial = try trainer(o, images: dir + "/images")
        XCTAssertNotEqual(weightBytes(initial.vae), weightBytes(a.vae))

        // The exported VAE loads, with scaling_factor measured only when asked.
        let exported = try Checkpoint.open(dir + "/straight/vae.dginstyle")
        XCTAssertEqual(exported.component("vae")?.className, "AutoencoderKL")
        XCTAssertEqual(exported.component("vae")?.config?["scaling_factor"]?.double, a.vae.config["scaling_factor"]?.double)
        a.scalingSamples = try a.source.validationBatch(4)!.pixels
        let measured = try a.exportComponent().config!["scaling_factor"]!.double!
        XCTAssertEqual(measured, a.latentScalingFactor(a.scalingSamples!), accuracy: 1e-4)
        XCTAssertNotEqual(measured, a.vae.config["scaling_factor"]?.double)

        let batch = try initial.source.validationBatch(4)!.pixels
        XCTAssertLessThan(a.reconstructionError(batch).error, initial.reconstructionError(batch).error)
        let terms = MetricsLog(path: dir + "/straight/metrics.jsonl").records().compactMap { $0["l1"]?.double }
        XCTAssertEqual(terms.count, 6)
    }

    /// --decoder-only: the encoder and quant_conv (hence every latent) stay bit for bit, the decoder
    /// learns, the loss is the L1 term alone, and the export keeps the config's scaling_factor.
    func testDecoderOnlyKeepsTheLatents() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Synth.writeDataset(to: dir + "/images", count: 3, width: 64, height: 48, style: .game, seed: 4, progress: false)
        let (models, _) = try Tiny.models()
        let vae = models.vae!
        func bytes(_ prefixes: [String]) -> [[Float]] {
            vae.namedParameters().filter { p in prefixes.contains { p.name.hasPrefix($0) } }.map { $0.parameter.value!.converted(to: .f32).floats }
        }
        let encoderBefore = bytes(["encoder.", "quant_conv."]), decoderBefore = bytes(["decoder.", "post_quant_conv."])
        let source = try ImageCropSource(folders: [dir + "/images"], resolution: 32, seed: 5)
        let t = try VAETrainer(vae: vae, source: source, klWeight: 1e-3, decoderOnly: true, options: Tiny.options(steps: 3, lr: 2e-3, batch: 2))
        t.scalingSamples = try source.validationBatch(4)!.pixels
        XCTAssertEqual(Set(t.trainableParameters.map { $0.name.split(separator: ".")[0] }), ["decoder", "post_quant_conv"])
        var last = StepResult(step: 0, loss: 0, learningRate: 0, gradientNorm: 0)
        for _ in 0..<3 { last = try t.trainStep() }
        XCTAssertEqual(bytes(["encoder.", "quant_conv."]), encoderBefore)
        XCTAssertNotEqual(bytes(["decoder.", "post_quant_conv."]), decoderBefore)
        let l1 = last.terms.first { $0.0 == "l1" }!.1
        XCTAssertEqual(last.loss, l1, accuracy: 1e-6 * max(1, abs(l1)))
        XCTAssertEqual(try t.exportComponent().config!["scaling_factor"]!.double, vae.config["scaling_factor"]!.double)
    }

    /// Every parameter of encoder and decoder gets the gradient finite differences give.
    func testGradientsReachEveryParameter() throws {
        let (models, _) = try Tiny.models()
        let vae = models.vae!
        for (_, p) in vae.namedParameters() {
            p.value = p.value!.converted(to: .f32)
            p.requiresGrad = true
            p.grad = nil
        }
        var rng = SplitMix64(seed: 3)
        let x = Tensor(shape: [2, 3, 16, 16], floats: (0..<(2 * 3 * 256)).map { _ in Float.random(in: -1...1, using: &rng) })
        func loss() -> Var {
            let m = vae.encodeMoments(Var(x))
            let c = m.shape[1] / 2
            return mseLoss(vae.decode(m.slice(axis: 1, 0..<c)), Var(x))
        }
        Autograd.backward(loss())
        let named = vae.namedParameters()
        let missing = named.filter { $0.parameter.grad == nil || $0.parameter.grad!.floats.allSatisfy { $0 == 0 } }.map(\.name)
        XCTAssertEqual(missing, [], "parameters without gradient")
        for name in ["encoder.conv_in.weight", "encoder.mid_block.attentions.0.to_q.weight", "quant_conv.weight", "decoder.conv_out.bias"] {
            guard let p = named.first(where: { $0.name == name })?.parameter else { XCTFail("no \(name)"); continue }
            let g = p.grad!.floats
            let j = g.indices.max { abs(g[$0]) < abs(g[$1]) }!
            var v = p.value!.floats
            let eps: Float = 1e-2
            v[j] += eps
            p.value = Tensor(shape: p.shape, floats: v)
            let plus = Double(Autograd.noGrad { loss() }.value.floats[0])
            v[j] -= 2 * eps
            p.value = Tensor(shape: p.shape, floats: v)
            let minus = Double(Autograd.noGrad { loss() }.value.floats[0])
            XCTAssertEqual(Double(g[j]), (plus - minus) / Double(2 * eps), accuracy: abs(Double(g[j])) * 0.05 + 1e-6, name)
        }
    }

    func testCropsAreDeterministicAndFlipped() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Synth.writeDataset(to: dir + "/a", count: 2, width: 64, height: 48, seed: 1, progress: false)
        try Synth.writeDataset(to: dir + "/b", count: 2, width: 64, height: 48, style: .photo, seed: 1, progress: false)
        let s1 = try ImageCropSource(folders: [dir + "/a", dir + "/b"], resolution: 16, seed: 9)
        let s2 = try ImageCropSource(folders: [dir + "/a", dir + "/b"], resolution: 16, seed: 9)
        XCTAssertEqual(s1.files.count, 4)
        _ = try s1.next(3)
        let state = s1.saveState()
        let after = try s1.next(5).pixels.floats
        try s2.restoreState(state)
        XCTAssertEqual(try s2.next(5).pixels.floats, after)
        // Crop k is the image's square at the stream's place, mirrored when the stream says so.
        var flipped = 0
        for k in 0..<8 {
            let stream = RandomStream(seed: 9, 0xC409, UInt64(k))
            let image = try PNG.read(s1.files[Int(stream.bits(0) % 4)]).rgb()
            var crop = image.cropped(CropRect(x: Int(stream.bits(1) % 49), y: Int(stream.bits(2) % 33), width: 16, height: 16))
            if stream.bits(3) & 1 == 1 {
                flipped += 1
                let rows = (0..<16).map { Array(crop.pixels[($0 * 48)..<($0 * 48 + 48)]) }
                crop.pixels = rows.flatMap { row in (0..<16).reversed().flatMap { row[($0 * 3)..<($0 * 3 + 3)] } }
            }
            let fresh = try ImageCropSource(folders: [dir + "/a", dir + "/b"], resolution: 16, seed: 9)
            try fresh.restoreState(["drawn": .int(k)])
            XCTAssertEqual(try fresh.next(1).pixels.floats, Image.batchTensor([crop]).floats, "crop \(k)")
        }
        XCTAssertTrue((1..<8).contains(flipped), "\(flipped) of 8 crops flipped")
        XCTAssertThrowsError(try ImageCropSource(folders: [dir + "/a"], resolution: 64, seed: 0).next(1))
    }
}

/// DreamBooth's image folder: every crop a `resolution` square, the same at the same run position,
/// taken from the stored image resized by the drawn zoom factor (DGInStyle's resize ratios: below 1
/// the crop sees more of the image, shrunk).
final class ImageFolderSourceTests: XCTestCase {
    func testCropsAndZoom() throws {
        let dir = Tiny.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Synth.writeDataset(to: dir + "/data", count: 3, width: 64, height: 32, style: .game, seed: 5, progress: false)
        let plain = try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", seed: 1)
        let zoomed = try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", zoom: 2...2, seed: 1)
        let out = try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", zoom: 0.5...0.5, seed: 1)
        XCTAssertEqual(try plain.next(4).pixels.shape, [4, 3, 16, 16])
        XCTAssertEqual(try zoomed.next(4).pixels.shape, [4, 3, 16, 16])
        XCTAssertEqual(try out.next(4).pixels.shape, [4, 3, 16, 16])
        let k = 5, path = plain.files[plain.fileIndex(k)]
        XCTAssertEqual(path, zoomed.files[zoomed.fileIndex(k)])
        let a = try plain.crop(k), b = try zoomed.crop(k), again = try zoomed.crop(k)
        XCTAssertEqual(b.pixels, again.pixels)
        XCTAssertNotEqual(a.pixels, b.pixels)
        // Zoom 1 is a crop of the stored image itself; zoom 0.5 one of the image halved (32x16):
        // half its width, its whole height.
        let stream = RandomStream(seed: 1, 0xC209, UInt64(k))
        let image = try PNG.read(path).rgb()
        XCTAssertEqual(a.pixels, image.cropped(.uniform(width: 16, height: 16, boundsWidth: 64, boundsHeight: 32, stream.bits(0), stream.bits(1))).pixels)
        let halved = image.resized(width: 32, height: 16, filter: .bilinear)
        XCTAssertEqual(try out.crop(k).pixels, halved.cropped(.uniform(width: 16, height: 16, boundsWidth: 32, boundsHeight: 16, stream.bits(0), stream.bits(1))).pixels)
        XCTAssertNil(plain.identity["zoom"])
        XCTAssertEqual(plain.identity["scale"], "stored image")
        XCTAssertEqual(zoomed.identity["zoom"], [2.0, 2.0])
        // Farther out than the image allows: the crop names the image and the least zoom that fits.
        let far = try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", zoom: 0.25...0.25, seed: 1)
        XCTAssertThrowsError(try far.crop(0)) { XCTAssertTrue("\($0)".contains("64x32 at zoom 0.250 is 16x8, smaller than the 16x16 crop; --zoom needs a lower bound of at least 0.500"), "\($0)") }
        XCTAssertThrowsError(try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", zoom: 0...1, seed: 1))
        // A zoom range draws a factor per crop: crops differ from both fixed ends somewhere.
        let ranged = try ImageFolderSource(folder: dir + "/data", resolution: 16, prompt: "", zoom: 0.5...2, seed: 1)
        XCTAssertTrue((0..<6).contains { try! ranged.crop($0).pixels != plain.crop($0).pixels })
        XCTAssertTrue((0..<6).contains { try! ranged.crop($0).pixels != out.crop($0).pixels })
    }
}

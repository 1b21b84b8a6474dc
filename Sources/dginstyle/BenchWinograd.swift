import DGBase
import DGTensor
import Foundation

/// `dginstyle bench sgemm --winograd`: 3x3 convolutions as Winograd F(2x2, 3x3) against the implicit-GEMM
/// route, alternated (`alternate`), forward and input gradient, at the shapes of SD 1.5's UNet (both
/// resolutions), its VAE decoder and the ControlNet's condition embedding: the measurements behind
/// `Kernels.winograd`'s rule; and where the products are f32 (input gradients always), F(4x4, 3x3) against
/// F(2x2, 3x3) (`Kernels.winograd4`'s rule). Rates are the direct convolution's flops over the time, so a Winograd
/// rate above the CPU's peak is the saving; the error columns are max |winograd - gemm| / max |gemm|.
extension Bench.Sgemm {
    func runWinograd() {
        let shapes: [(String, Int, Int, Int, Int)] = [   // (what, cout, cin, side, batch)
            ("UNet 256 px", 320, 320, 32, 1), ("UNet 256 px", 640, 640, 16, 1), ("UNet 256 px", 640, 1280, 16, 1), ("UNet 256 px", 1280, 1280, 8, 1),
            ("UNet 512 px", 320, 320, 64, 1), ("UNet 512 px", 320, 640, 64, 1), ("UNet 512 px", 320, 960, 64, 1),
            ("UNet 512 px upsampler", 640, 640, 64, 1), ("UNet 512 px", 640, 640, 32, 1), ("UNet 512 px", 640, 1920, 32, 1),
            ("UNet 512 px upsampler", 1280, 1280, 32, 1), ("UNet 512 px", 1280, 1280, 16, 1), ("UNet 512 px", 1280, 1920, 16, 1), ("UNet 512 px", 1280, 2560, 16, 1),
            ("VAE 512 px", 512, 512, 64, 1), ("VAE 512 px", 512, 512, 128, 1), ("VAE 512 px", 256, 256, 256, 1), ("VAE 512 px", 128, 128, 512, 1),
            ("ControlNet condition", 16, 16, 512, 1), ("ControlNet condition", 32, 32, 256, 1), ("ControlNet condition", 96, 96, 128, 1),
            ("ControlNet condition", 320, 256, 64, 1),
            // The experiment's segmenter (claim 3): batch 8 of 128 px crops, samples small enough that
            // the implicit-GEMM route gives each thread whole samples.
            ("segmenter", 32, 32, 64, 8), ("segmenter", 64, 64, 32, 8), ("segmenter", 96, 96, 16, 8),
        ]
        let rule = Kernels.winogradTiles, rule4 = Kernels.winograd4Tiles
        defer { Kernels.winogradTiles = rule; Kernels.winograd4Tiles = rule4 }
        let f4 = !(bf16 && GEMM.bf16)   // F(4x4, 3x3) takes f32 products only
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        var rows: [String] = []
        for (what, cout, cin, side, n) in shapes where only.map({ "\(what) \(cout) x \(cin) x \(side)²".contains($0) }) ?? true {
            let x = randomWeights([n, cin, side, side], seed: 3, std: 1)
            let w32 = randomWeights([cout, cin, 3, 3], seed: 4), w = bf16 ? w32.converted(to: .bf16) : w32
            let b = randomWeights([cout], seed: 5), gy = randomWeights([n, cout, side, side], seed: 6, std: 1)
            let flops = 2.0 * Double(n * cout * cin * 9 * side * side)
            func forward(_ on: Bool, block4: Bool = false) -> Tensor {
                Kernels.winogradTiles = on ? 1 : -1
                Kernels.winograd4Tiles = block4 ? 1 : -1
                return Kernels.conv2d(x, w, b, stride: 1, padding: 1)
            }
            func inputGradient(_ on: Bool, block4: Bool = false) -> Tensor {
                Kernels.winogradTiles = on ? 1 : -1
                Kernels.winograd4Tiles = block4 ? 1 : -1
                return Kernels.conv2dBackward(gy, x: x, w: w, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false).x!
            }
            func error(_ a: Tensor, _ b: Tensor) -> Double {
                let d = a.floats, e = b.floats
                let scale = e.map { Swift.abs(Double($0)) }.max() ?? 1
                return zip(d, e).map { Swift.abs(Double($0) - Double($1)) }.max().map { $0 / Swift.max(scale, 1e-30) } ?? 0
            }
            let forwardError = error(forward(true), forward(false)), inputError = error(inputGradient(true), inputGradient(false))
            let (gemmRate, winogradRate) = alternate(flops, { _ = forward(false) }, { _ = forward(true) })
            let (gemmInput, winogradInput) = alternate(flops, { _ = inputGradient(false) }, { _ = inputGradient(true) })
            // F(4x4) against F(2x2), alternated with each other.
            let error4 = f4 ? error(forward(true, block4: true), forward(false)) : nil
            let rates4 = f4 ? alternate(flops, { _ = forward(true) }, { _ = forward(true, block4: true) }) : nil
            let inputError4 = error(inputGradient(true, block4: true), inputGradient(false))
            let inputRates4 = alternate(flops, { _ = inputGradient(true) }, { _ = inputGradient(true, block4: true) })
            Kernels.winogradTiles = rule
            Kernels.winograd4Tiles = rule4
            let chosen = ["GEMM", "", "F(2x2)", "", "F(4x4)"][Kernels.winogradBlock(x: x.shape, weight: w, stride: 1, padding: 1)]
            let block4 = rates4.map { "\(f($0.1)) | \(String(format: "%.2f", $0.1 / $0.0))" } ?? "- | -"
            let inputBlock4 = "\(f(inputRates4.1)) | \(String(format: "%.2f", inputRates4.1 / inputRates4.0))"
            let errors = [forwardError, error4, inputError, inputError4].map { $0.map { String(format: "%.1e", $0) } ?? "-" }
            rows.append("| \(what)\(n > 1 ? ", batch \(n)" : "") | \(cout) x \(cin) x \(side)² | \(f(gemmRate)) | \(f(winogradRate)) | \(String(format: "%.2f", winogradRate / gemmRate)) | \(block4) | \(f(gemmInput)) | \(f(winogradInput)) | \(String(format: "%.2f", winogradInput / gemmInput)) | \(inputBlock4) | \(errors.joined(separator: " / ")) | \(chosen) |")
            if json {
                emit(JSON.object([("what", .string(what)), ("cout", .int(cout)), ("cin", .int(cin)), ("side", .int(side)), ("batch", .int(n)),
                                  ("gemm", .double(gemmRate)), ("winograd", .double(winogradRate)),
                                  ("winograd4", rates4.map { .double($0.1) } ?? .null), ("winograd4_error", error4.map { .double($0) } ?? .null),
                                  ("input_gradient_gemm", .double(gemmInput)), ("input_gradient_winograd", .double(winogradInput)),
                                  ("input_gradient_winograd4", .double(inputRates4.1)),
                                  ("error", .double(forwardError)), ("input_gradient_error", .double(inputError)),
                                  ("input_gradient_winograd4_error", .double(inputError4)),
                                  ("rule", .string(chosen))]).compact)
            }
        }
        if json { return }
        let weights = bf16 ? "bf16 weights, forward products in \(GEMM.bf16 ? "bf16" : "f32 (the bf16 products are off on this CPU)")" : "f32 weights"
        emit("\(Parallel.threads) threads; \(weights); GFLOP/s of the direct convolution's flops, best of \(repeats), Winograd and GEMM samples alternated (F(4x4) with F(2x2)); the rule: at least \(rule) 2x2 tiles and \(Kernels.winogradChannels) channels, F(4x4) with f32 products from \(rule4) 4x4 tiles")
        emit("| convolution | cout x cin x side² | forward, GEMM | forward, F(2x2) | ratio | forward, F(4x4) | F(4x4) / F(2x2) | input gradient, GEMM | input gradient, F(2x2) | ratio | input gradient, F(4x4) | F(4x4) / F(2x2) | max error, forward F(2x2) / F(4x4), input gradient F(2x2) / F(4x4) | forward rule |")
        emit("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        emit(rows.joined(separator: "\n"))
    }
}

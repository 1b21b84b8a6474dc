import DGBase
import DGTensor
import Foundation

/// `dginstyle bench sgemm --backward`: the kernels training spends its backward pass in, each beside
/// its forward at the same shape and timed alternately with it (`alternate`): a 3x3 convolution's
/// weight gradient and input gradient (each as many flops as the forward), and the fused attention's
/// backward (five products against the forward's two). At the UNet's shapes and at the segmenter's
/// (claim 3's training, batch 8 of 128 px crops).
extension Bench.Sgemm {
    func runBackward() {
        var rows: [String] = []
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func row(_ what: String, _ shape: String, _ fields: [(String, JSON)], _ forwardFlops: Double,
                 _ forward: () -> Void, _ passes: [(String, Double, () -> Void)]) {
            var cells: [String] = [], values: [(String, JSON)] = []
            var fwd = 0.0
            for (name, flops, body) in passes {
                // Rates in calls per second of each; GFLOP/s from each one's own flops.
                let (a, b) = alternate(1e9, forward, body)
                fwd = Swift.max(fwd, a * forwardFlops / 1e9)
                let rate = b * flops / 1e9
                cells.append("\(f(rate)) (\(String(format: "%.2f", a / b))x time)")
                values.append((name, .double(rate)))
            }
            rows.append("| \(what) | \(shape) | \(f(fwd)) | " + cells.joined(separator: " | ") + " |")
            if json { emit(JSON.object(fields + [("forward", .double(fwd))] + values).compact) }
        }
        let convShapes: [(String, Int, Int, Int)] =
            [("UNet 512 px", 1, 320, 64), ("UNet 512 px", 1, 640, 32), ("UNet 512 px", 1, 1280, 16), ("UNet 512 px", 1, 1280, 8), ("UNet 256 px", 1, 640, 16), ("UNet 256 px", 1, 1280, 4),
             ("VAE 512 px", 1, 128, 256), ("VAE 512 px", 1, 256, 128),
             ("segmenter", 8, 16, 128), ("segmenter", 8, 32, 64), ("segmenter", 8, 64, 32), ("segmenter", 8, 96, 16)]
        for (what, n, c, side) in convShapes {
            let x = randomWeights([n, c, side, side], seed: 3, std: 1), w = randomWeights([c, c, 3, 3], seed: 4)
            let b = randomWeights([c], seed: 5), gy = randomWeights([n, c, side, side], seed: 6, std: 1)
            let flops = 2.0 * Double(n * c * c * 9 * side * side)
            withExtendedLifetime((x, w, b, gy)) {
                row("\(what) conv 3x3 \(c)ch", "\(n)x\(c)x\(side)x\(side)", [("what", .string("conv3x3")), ("batch", .int(n)),
                    ("channels", .int(c)), ("side", .int(side))], flops,
                    { _ = Kernels.conv2d(x, w, b, stride: 1, padding: 1) },
                    [("weight_gradient", flops, { _ = Kernels.conv2dBackward(gy, x: x, w: w, stride: 1, padding: 1, needInput: false, needWeight: true, needBias: false) }),
                     ("input_gradient", flops, { _ = Kernels.conv2dBackward(gy, x: x, w: w, stride: 1, padding: 1, needInput: true, needWeight: false, needBias: false) }),
                     // The weight gradient by the other route than the one the rule picks here.
                     ("weight_gradient_other", flops, {
                         let rule = Kernels.directWeightGradientChannels
                         Kernels.directWeightGradientChannels = c <= rule ? -1 : c
                         _ = Kernels.conv2dBackward(gy, x: x, w: w, stride: 1, padding: 1, needInput: false, needWeight: true, needBias: false)
                         Kernels.directWeightGradientChannels = rule
                     })])
            }
        }
        // Self-attention at each level, and the cross-attention over 77 text tokens at the first.
        for (c, side, keys) in [(320, 64, 0), (640, 32, 0), (1280, 16, 0), (320, 64, 77)] {
            let l = side * side, lk = keys > 0 ? keys : l, d = c / 8, scale = 1 / Float(d).squareRoot()
            let q = randomWeights([1, l, c], seed: 6, std: 1), k = randomWeights([1, lk, c], seed: 7, std: 1)
            let v = randomWeights([1, lk, c], seed: 8, std: 1), g = randomWeights([1, l, c], seed: 9, std: 1)
            let (out, lse) = Kernels.attention(q: q, k: k, v: v, heads: 8, scale: scale, causal: false)
            let flops = 4.0 * Double(l) * Double(lk) * Double(c)
            withExtendedLifetime((q, k, v, g, out, lse)) {
                row("UNet 512 px \(keys > 0 ? "cross" : "self")-attention \(c)ch", "L=\(l)\(keys > 0 ? " x \(lk) keys" : ""), 8 heads of \(d)",
                    [("what", .string(keys > 0 ? "cross-attention" : "attention")), ("channels", .int(c)), ("tokens", .int(l)), ("keys", .int(lk))], flops,
                    { _ = Kernels.attention(q: q, k: k, v: v, heads: 8, scale: scale, causal: false) },
                    [("backward", 2.5 * flops, { _ = Kernels.attentionBackward(g, q: q, k: k, v: v, out: out, logsumexp: lse, heads: 8, scale: scale, causal: false) })]
                    + (Kernels.attentionBackwardKeys(lk) >= lk ? [] : [("backward_all_keys", 2.5 * flops, {
                        // Every key in each query block's products, as before key blocks.
                        Kernels.attentionBackwardKeyBlock = lk
                        _ = Kernels.attentionBackward(g, q: q, k: k, v: v, out: out, logsumexp: lse, heads: 8, scale: scale, causal: false)
                        Kernels.attentionBackwardKeyBlock = nil
                    })]))
            }
        }
        if json { return }
        emit("\(Parallel.threads) threads; AVX-512 kernels \(GEMM.vectorized ? "on" : "off"); GFLOP/s, best of \(repeats), each pass alternated with its forward; (n x time): its time over the forward's")
        emit("direct weight gradient (straight from the image) up to \(Kernels.directWeightGradientChannels) output channels; the last column takes the other route")
        emit("| kernel | shape | forward | weight gradient / attention backward | input gradient / attention backward, all keys per block | weight gradient, other route |")
        emit("|---|---|---|---|---|---|")
        emit(rows.joined(separator: "\n"))
    }
}

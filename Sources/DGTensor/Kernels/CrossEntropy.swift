import Foundation

/// Per-pixel softmax cross-entropy for semantic segmentation (PyTorch's
/// `F.cross_entropy(logits, target, ignore_index=255)`, mean reduction): logits [N, C, H, W],
/// one target per pixel (N H W, row-major). Pixels whose target is `ignoreIndex`, or any value
/// outside 0..<C, contribute nothing and are not counted; the loss is the mean over the counted
/// pixels, and 0 when there are none (PyTorch gives NaN there, which would poison a whole run
/// for one crop of sky-less void). With class `weights` (PyTorch's `weight=`) each counted pixel
/// weighs the weight of its target class, and the mean is over those weights.
extension Kernels {
    public struct CrossEntropyResult {
        public let loss: Float
        /// Pixels that counted.
        public let count: Int
        /// The sum of their weights (`count` without class weights): the loss's denominator.
        public let weight: Double
        /// log(sum_c exp(logit_c)) of each pixel (0 at ignored ones), for backward.
        public let logSumExp: Tensor
    }

    public static func crossEntropy(_ logits: Tensor, targets: [UInt8], ignoreIndex: UInt8 = 255,
                                    weights: [Float]? = nil) -> CrossEntropyResult {
        let s = logits.shape
        guard s.count == 4 else { fatalError("crossEntropy: logits must be [N, C, H, W], got \(s)") }
        let (n, c, plane) = (s[0], s[1], s[2] * s[3])
        guard targets.count == n * plane else { fatalError("crossEntropy: \(targets.count) targets for \(n * plane) pixels") }
        if let weights, weights.count != c { fatalError("crossEntropy: \(weights.count) class weights for \(c) classes") }
        let x = f32(logits), lse = Tensor(zeros: [n, s[2], s[3]])
        defer { withExtendedLifetime((x, lse)) {} }
        let xp = pointer(x), lp = pointer(lse)
        let pixels = n * plane
        // Sums and counts per chunk, combined in chunk order: deterministic for a thread count.
        let chunks = Parallel.chunks(pixels, minimumChunk: grain(3 * c))
        var partialLoss = [Double](repeating: 0, count: chunks.count)
        var partialCount = [Int](repeating: 0, count: chunks.count)
        var partialWeight = [Double](repeating: 0, count: chunks.count)
        targets.withUnsafeBufferPointer { tp in
            partialLoss.withUnsafeMutableBufferPointer { pl in
                partialCount.withUnsafeMutableBufferPointer { pc in
                    partialWeight.withUnsafeMutableBufferPointer { pw in
                        let (tp, pl, pc, pw) = (tp, pl, pc, pw)
                        Parallel.run(chunks.count) { k in
                            var total = 0.0, counted = 0, weight = 0.0
                            for p in chunks[k] {
                                let t = Int(tp[p])
                                guard tp[p] != ignoreIndex, t < c else { continue }
                                let base = xp + (p / plane) * c * plane + p % plane
                                var m = -Float.infinity
                                for j in 0..<c { m = Swift.max(m, base[j * plane]) }
                                var e = 0.0
                                for j in 0..<c { e += Double(exp(base[j * plane] - m)) }
                                let l = m + Float(Foundation.log(e))
                                lp[p] = l
                                let w = Double(weights?[t] ?? 1)
                                total += w * Double(l - base[t * plane])
                                weight += w
                                counted += 1
                            }
                            pl[k] = total
                            pc[k] = counted
                            pw[k] = weight
                        }
                    }
                }
            }
        }
        let count = partialCount.reduce(0, +), weight = partialWeight.reduce(0, +)
        let loss = weight > 0 ? Float(partialLoss.reduce(0, +) / weight) : 0
        return CrossEntropyResult(loss: loss, count: count, weight: weight, logSumExp: lse)
    }

    /// d loss / d logits, times the scalar `gradOut`: (softmax - onehot(target)) w(target) / weight at
    /// counted pixels (w = 1 and weight = count without class weights), 0 at ignored ones.
    public static func crossEntropyBackward(_ gradOut: Float, logits: Tensor, targets: [UInt8], ignoreIndex: UInt8 = 255,
                                            weights: [Float]? = nil, logSumExp: Tensor, weight: Double) -> Tensor {
        let s = logits.shape
        let (n, c, plane) = (s[0], s[1], s[2] * s[3])
        let x = f32(logits), l = f32(logSumExp), g = Tensor(zeros: s)
        defer { withExtendedLifetime((x, l, g)) {} }
        guard weight > 0 else { return g }
        let xp = pointer(x), lp = pointer(l), gp = pointer(g)
        let unit = gradOut / Float(weight)
        targets.withUnsafeBufferPointer { tp in
            let tp = tp
            Parallel.forEach(n * plane, minimumChunk: grain(2 * c)) { r in
                for p in r {
                    let t = Int(tp[p])
                    guard tp[p] != ignoreIndex, t < c else { continue }
                    let offset = (p / plane) * c * plane + p % plane
                    let base = xp + offset, out = gp + offset, lse = lp[p]
                    let scale = unit * (weights?[t] ?? 1)
                    for j in 0..<c { out[j * plane] = exp(base[j * plane] - lse) * scale }
                    out[t * plane] -= scale
                }
            }
        }
        return g
    }
}

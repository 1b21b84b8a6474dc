import DGTensor
import Foundation

/// How well an image follows a label map: the share of the image's colour variance that the
/// classes explain (R², "eta squared" of a one-way analysis of variance over classes):
/// 1 - sum over pixels of |x - mean of its class|² / sum over pixels of |x - mean|².
/// 1 means every class region is a flat colour of its own; an image unrelated to the mask
/// scores near 0 (above 0 by chance, more so with few pixels per class). Ignored pixels (255)
/// are left out. `image` is [1, 3, H, W] (any range), `labels` H x W train ids.
public func maskAlignment(image: Tensor, labels: [UInt8]) -> Double {
    let c = image.shape[1], plane = image.shape[2] * image.shape[3]
    precondition(labels.count == plane, "maskAlignment: \(labels.count) labels for \(plane) pixels")
    let x = image.floats
    var sums = [[Double]](repeating: [Double](repeating: 0, count: c), count: 256)
    var counts = [Double](repeating: 0, count: 256)
    var total = [Double](repeating: 0, count: c), n = 0.0
    for p in 0..<plane where labels[p] != 255 {
        let k = Int(labels[p])
        counts[k] += 1
        n += 1
        for ch in 0..<c {
            sums[k][ch] += Double(x[ch * plane + p])
            total[ch] += Double(x[ch * plane + p])
        }
    }
    guard n > 1 else { return 0 }
    var within = 0.0, all = 0.0
    for p in 0..<plane where labels[p] != 255 {
        let k = Int(labels[p])
        for ch in 0..<c {
            let v = Double(x[ch * plane + p])
            within += pow(v - sums[k][ch] / counts[k], 2)
            all += pow(v - total[ch] / n, 2)
        }
    }
    return all > 0 ? 1 - within / all : 0
}

/// A label map shrunk by `factor` (to latent resolution): each block's most frequent class,
/// ignoring 255 unless the block holds nothing else; ties go to the lower id.
public func downsampleLabels(_ labels: [UInt8], width: Int, height: Int, factor: Int) -> [UInt8] {
    let (w, h) = (width / factor, height / factor)
    var out = [UInt8](repeating: 255, count: w * h)
    var counts = [Int](repeating: 0, count: 256)
    for by in 0..<h {
        for bx in 0..<w {
            for i in counts.indices { counts[i] = 0 }
            for y in (by * factor)..<((by + 1) * factor) {
                for x in (bx * factor)..<((bx + 1) * factor) { counts[Int(labels[y * width + x])] += 1 }
            }
            var best = 255, n = 0
            for c in 0..<255 where counts[c] > n { best = c; n = counts[c] }
            out[by * w + bx] = UInt8(best)
        }
    }
    return out
}

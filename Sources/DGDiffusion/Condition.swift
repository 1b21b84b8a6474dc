import DGData
import DGTensor

/// The ControlNet condition of DGInStyle: a label map of train ids (0..18, 255 = ignore) as a
/// one-hot image with one channel per class and the ignore label as the last channel.
public enum SemanticCondition {
    /// labels [N, H, W] (any integer or float dtype) -> [N, classes + 1, H, W] float32.
    public static func oneHot(_ labels: Tensor, classes: Int = Cityscapes.classCount) -> Tensor {
        let (n, h, w) = (labels.shape[0], labels.shape[1], labels.shape[2])
        let values = labels.converted(to: .i64)
        return values.withRawBytes { raw in
            let ids = raw.bindMemory(to: Int64.self)
            return oneHot(count: n, width: w, height: h, classes: classes) { Int(ids[$0]) }
        }
    }

    /// One-hot condition [1, classes + 1, H, W] of a row-major label map.
    public static func oneHot(ids: [UInt8], width: Int, height: Int, classes: Int = Cityscapes.classCount) -> Tensor {
        oneHot(count: 1, width: width, height: height, classes: classes) { Int(ids[$0]) }
    }

    /// Ids outside 0..<classes (255 = ignore, and anything else) go to the last channel.
    private static func oneHot(count n: Int, width w: Int, height h: Int, classes: Int, id: (Int) -> Int) -> Tensor {
        let out = Tensor(zeros: [n, classes + 1, h, w])
        let plane = h * w
        out.withMutableFloats { o in
            for s in 0..<n {
                for p in 0..<plane {
                    let label = id(s * plane + p)
                    let c = (0..<classes).contains(label) ? label : classes
                    o[(s * (classes + 1) + c) * plane + p] = 1
                }
            }
        }
        return out
    }
}

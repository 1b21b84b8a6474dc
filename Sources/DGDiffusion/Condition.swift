import DGLayers
import DGTensor

/// The ControlNet condition of DGInStyle: a label map of train ids (0..18, 255 = ignore) as a
/// one-hot image with one channel per class and the ignore label as the last channel.
public enum SemanticCondition {
    public static let classCount = 19
    public static let ignoreLabel = 255

    /// labels [N, H, W] (any integer or float dtype) -> [N, classCount + 1, H, W] float32.
    public static func oneHot(_ labels: Tensor, classes: Int = classCount) -> Tensor {
        let (n, h, w) = (labels.shape[0], labels.shape[1], labels.shape[2])
        let values = labels.converted(to: .i64)
        let out = Tensor(zeros: [n, classes + 1, h, w])
        let plane = h * w
        values.withRawBytes { raw in
            let ids = raw.bindMemory(to: Int64.self)
            out.withMutableFloats { o in
                for s in 0..<n {
                    for p in 0..<plane {
                        let id = Int(ids[s * plane + p])
                        let c = (0..<classes).contains(id) ? id : classes
                        o[(s * (classes + 1) + c) * plane + p] = 1
                    }
                }
            }
        }
        return out
    }
}

import DGAutograd
import DGBase
import DGCheckpoint
import DGLayers
import DGTensor
import Foundation

/// A small fully-convolutional encoder-decoder (a U-Net without attention) that scores every
/// pixel for the 19 Cityscapes classes: the yardstick of DGInStyle's claim that generated data
/// helps a segmenter generalise. Small enough to train in minutes on a laptop CPU; the point is
/// comparing training sets, not matching DAFormer.
///
///     conv_in                     3 -> c0, full resolution
///     encoder.0                   c0 at 1        -> skip 0
///     encoder.1 (downsample)      c1 at 1/2      -> skip 1
///     encoder.2 (downsample)      c2 at 1/4      -> skip 2
///     encoder.3 (downsample)      c3 at 1/8        (the bottleneck)
///     decoder.0                   nearest 2x, conv c3 -> c2, concat skip 2, block -> c2 at 1/4
///     decoder.1                   ... -> c1 at 1/2
///     decoder.2                   ... -> c0 at 1
///     conv_norm_out, SiLU, conv_out (1x1)  c0 -> classes
///
/// Every block is two 3x3 convolutions, each followed by GroupNorm and SiLU. Input sides must be
/// multiples of 2^(levels - 1) (8 with four levels); `predict` pads to that.
public final class Segmenter: Module {
    public final class DownBlock: Module {
        /// Stride-2 3x3 convolution that halves the resolution (nil in the first block).
        public let downsample: Conv2d?
        public let conv1: Conv2d
        public let norm1: GroupNorm
        public let conv2: Conv2d
        public let norm2: GroupNorm

        init(_ cin: Int, _ cout: Int, groups: Int, downsample: Bool) {
            self.downsample = downsample ? Conv2d(cin, cin, kernel: 3, stride: 2, padding: 1) : nil
            conv1 = Conv2d(cin, cout, kernel: 3, padding: 1)
            norm1 = GroupNorm(groups: groups, channels: cout)
            conv2 = Conv2d(cout, cout, kernel: 3, padding: 1)
            norm2 = GroupNorm(groups: groups, channels: cout)
        }

        func callAsFunction(_ x: Var) -> Var {
            var h = downsample.map { $0(x) } ?? x
            h = norm1.withSiLU(conv1(h))
            return norm2.withSiLU(conv2(h))
        }
    }

    public final class UpBlock: Module {
        /// After the nearest-neighbour 2x upsampling: brings the channels down to the skip's.
        public let conv_up: Conv2d
        /// Over [upsampled, skip] concatenated.
        public let conv1: Conv2d
        public let norm1: GroupNorm
        public let conv2: Conv2d
        public let norm2: GroupNorm

        init(_ cin: Int, _ cout: Int, groups: Int) {
            conv_up = Conv2d(cin, cout, kernel: 3, padding: 1)
            conv1 = Conv2d(2 * cout, cout, kernel: 3, padding: 1)
            norm1 = GroupNorm(groups: groups, channels: cout)
            conv2 = Conv2d(cout, cout, kernel: 3, padding: 1)
            norm2 = GroupNorm(groups: groups, channels: cout)
        }

        func callAsFunction(_ x: Var, skip: Var) -> Var {
            let up = conv_up(upsampleNearest2x(x))
            let h = norm1.withSiLU(conv1(concat([up, skip], axis: 1)))
            return norm2.withSiLU(conv2(h))
        }
    }

    public let conv_in: Conv2d
    public let encoder: [DownBlock]
    public let decoder: [UpBlock]
    public let conv_norm_out: GroupNorm
    public let conv_out: Conv2d

    public let config: SegmenterConfig

    public init(_ config: SegmenterConfig) {
        self.config = config
        let c = config.blockOutChannels, g = config.normGroups
        conv_in = Conv2d(config.inChannels, c[0], kernel: 3, padding: 1)
        encoder = c.indices.map { i in DownBlock(i == 0 ? c[0] : c[i - 1], c[i], groups: g, downsample: i > 0) }
        decoder = c.indices.dropFirst().reversed().map { i in UpBlock(c[i], c[i - 1], groups: g) }
        conv_norm_out = GroupNorm(groups: g, channels: c[0])
        conv_out = Conv2d(c[0], config.numClasses, kernel: 1)
    }

    /// Sides of an input must be multiples of this.
    public var sizeMultiple: Int { 1 << (config.blockOutChannels.count - 1) }

    /// Class scores (logits) [N, classes, H, W] of images [N, 3, H, W] in [-1, 1].
    public func callAsFunction(_ x: Var) -> Var {
        var h = conv_in(x)
        var skips: [Var] = []
        for block in encoder {
            h = block(h)
            skips.append(h)
        }
        skips.removeLast()  // the bottleneck is the decoder's input, not a skip
        for block in decoder { h = block(h, skip: skips.removeLast()) }
        return conv_out(conv_norm_out.withSiLU(h))
    }

    /// The most likely class of every pixel of one image [1, 3, H, W] of any size: the image is
    /// padded (edge pixels repeated) to a multiple of `sizeMultiple` and the scores cropped back.
    public func predict(_ image: Tensor) -> [UInt8] {
        let (h, w) = (image.shape[2], image.shape[3])
        let m = sizeMultiple
        let (ph, pw) = ((h + m - 1) / m * m, (w + m - 1) / m * m)
        let input = ph == h && pw == w ? image : Segmenter.padReplicate(image, height: ph, width: pw)
        let logits = Autograd.noGrad { self(Var(input)) }.value.contiguous()
        let classes = logits.shape[1], plane = ph * pw
        var out = [UInt8](repeating: 0, count: h * w)
        logits.withFloats { l in
            for y in 0..<h {
                for x in 0..<w {
                    let p = y * pw + x
                    var best = 0, bestScore = l[p]
                    for c in 1..<classes where l[c * plane + p] > bestScore {
                        best = c
                        bestScore = l[c * plane + p]
                    }
                    out[y * w + x] = UInt8(best)
                }
            }
        }
        return out
    }

    /// [N, C, H, W] grown to height x width by repeating the last row and column (zero padding
    /// would show the network a black frame it never saw in training).
    static func padReplicate(_ t: Tensor, height: Int, width: Int) -> Tensor {
        let s = t.shape, src = t.converted(to: .f32).contiguous()
        let out = Tensor(uninitialized: [s[0], s[1], height, width])
        src.withFloats { a in
            out.withMutableFloats { o in
                for nc in 0..<(s[0] * s[1]) {
                    for y in 0..<height {
                        let sy = min(y, s[2] - 1)
                        for x in 0..<width { o[(nc * height + y) * width + x] = a[(nc * s[2] + sy) * s[3] + min(x, s[3] - 1)] }
                    }
                }
            }
        }
        return out
    }
}

/// The shape of a `Segmenter`, stored as `segmenter/config.json` beside its weights.
public struct SegmenterConfig: Equatable, Sendable {
    public static let className = "Segmenter"

    public var inChannels = 3
    public var numClasses = 19
    public var blockOutChannels = [16, 32, 64, 96]
    public var normGroups = 8
    /// Names of the classes, in id order (the Cityscapes train classes by default).
    public var classNames: [String]

    public init(classNames: [String]) {
        self.classNames = classNames
        numClasses = classNames.count
    }

    public var json: JSON {
        [
            "_class_name": .string(Self.className), "in_channels": .int(inChannels), "num_classes": .int(numClasses),
            "block_out_channels": .array(blockOutChannels.map { .int($0) }), "norm_num_groups": .int(normGroups),
            "class_names": .array(classNames.map { .string($0) }),
        ]
    }

    public init(json: JSON) throws {
        func fail(_ key: String, _ problem: String) -> ModelConfigError {
            ModelConfigError(model: Self.className, key: key, problem: problem)
        }
        guard json["_class_name"]?.string == Self.className else { throw fail("_class_name", "is not \"\(Self.className)\"") }
        guard let names = json["class_names"]?.array?.compactMap(\.string), !names.isEmpty, names.count <= 255 else {
            throw fail("class_names", "must list 1 to 255 class names")
        }
        classNames = names
        numClasses = json["num_classes"]?.int ?? names.count
        guard numClasses == names.count else { throw fail("num_classes", "= \(numClasses) but class_names lists \(names.count)") }
        inChannels = json["in_channels"]?.int ?? 3
        guard inChannels == 3 else { throw fail("in_channels", "= \(inChannels); only RGB input (3) is supported") }
        guard let channels = json["block_out_channels"]?.array?.compactMap(\.int), channels.count >= 2, channels.count <= 6 else {
            throw fail("block_out_channels", "must list 2 to 6 channel counts")
        }
        blockOutChannels = channels
        normGroups = json["norm_num_groups"]?.int ?? 8
        guard normGroups > 0, channels.allSatisfy({ $0 > 0 && $0 % normGroups == 0 }) else {
            throw fail("norm_num_groups", "= \(normGroups) must divide every entry of block_out_channels \(channels)")
        }
    }
}

extension Segmenter {
    public static let componentName = "segmenter"

    /// Writes the weights (float32) and `segmenter/config.json` into one native file, atomically.
    /// `extra` (how it was trained) is stored as `segmenter/training.json`.
    public func save(to path: String, extra: JSON? = nil) throws {
        let w = try NativeWriter(path: path, kind: "model")
        do {
            try w.addFile(Self.componentName + "/config.json", Array((config.json.pretty + "\n").utf8))
            if let extra { try w.addFile(Self.componentName + "/training.json", Array((extra.pretty + "\n").utf8)) }
            w.addComponent(Self.componentName, className: SegmenterConfig.className)
            for (name, p) in namedParameters() {
                guard let v = p.value else { throw FileError(path, "parameter \(name) has no value") }
                let t = v.converted(to: .f32).contiguous()
                try t.withRawBytes { try w.addTensor(component: Self.componentName, entry: TensorEntry(name: name, dtype: .f32, shape: t.shape), bytes: $0) }
            }
            try w.finish()
        } catch {
            w.abort()
            throw error
        }
    }

    /// A segmenter written by `save` (or a training checkpoint, which holds the same component).
    public static func load(from path: String) throws -> Segmenter {
        let file = try NativeFile(path: path)
        guard file.components.contains(where: { $0.name == componentName && $0.className == SegmenterConfig.className }) else {
            throw FileError(path, "holds no segmenter (components: \(file.components.map(\.name).joined(separator: ", ")))")
        }
        let config: SegmenterConfig
        do {
            config = try SegmenterConfig(json: JSON.parse(bytes: try file.file(componentName + "/config.json")))
        } catch let e as FileError { throw e } catch {
            throw FileError(path, "segmenter/config.json: \(error)")
        }
        let model = Segmenter(config)
        try model.load(from: file.source(componentName))
        // Weights are read from the mapped file; copies let the file be replaced while in use.
        for (_, p) in model.namedParameters() { p.value = p.value?.copied() }
        return model
    }
}

import DGBase
/// The Cityscapes label definitions (cityscapesScripts `labels.py`), in one place: the 19
/// train classes every DGInStyle model, caption and dataset uses, and the 34 label ids that
/// GTA5 and Cityscapes label files store.
public enum Cityscapes {
    public struct Label: Sendable {
        public let name: String
        public let id: Int
        public let trainId: UInt8
        public let color: (UInt8, UInt8, UInt8)
    }

    /// Labels with ids 0...33 in id order (`license plate`, id -1, is not stored in label files).
    public static let labels: [Label] = [
        Label(name: "unlabeled", id: 0, trainId: 255, color: (0, 0, 0)),
        Label(name: "ego vehicle", id: 1, trainId: 255, color: (0, 0, 0)),
        Label(name: "rectification border", id: 2, trainId: 255, color: (0, 0, 0)),
        Label(name: "out of roi", id: 3, trainId: 255, color: (0, 0, 0)),
        Label(name: "static", id: 4, trainId: 255, color: (0, 0, 0)),
        Label(name: "dynamic", id: 5, trainId: 255, color: (111, 74, 0)),
        Label(name: "ground", id: 6, trainId: 255, color: (81, 0, 81)),
        Label(name: "road", id: 7, trainId: 0, color: (128, 64, 128)),
        Label(name: "sidewalk", id: 8, trainId: 1, color: (244, 35, 232)),
        Label(name: "parking", id: 9, trainId: 255, color: (250, 170, 160)),
        Label(name: "rail track", id: 10, trainId: 255, color: (230, 150, 140)),
        Label(name: "building", id: 11, trainId: 2, color: (70, 70, 70)),
        Label(name: "wall", id: 12, trainId: 3, color: (102, 102, 156)),
        Label(name: "fence", id: 13, trainId: 4, color: (190, 153, 153)),
        Label(name: "guard rail", id: 14, trainId: 255, color: (180, 165, 180)),
        Label(name: "bridge", id: 15, trainId: 255, color: (150, 100, 100)),
        Label(name: "tunnel", id: 16, trainId: 255, color: (150, 120, 90)),
        Label(name: "pole", id: 17, trainId: 5, color: (153, 153, 153)),
        Label(name: "polegroup", id: 18, trainId: 255, color: (153, 153, 153)),
        Label(name: "traffic light", id: 19, trainId: 6, color: (250, 170, 30)),
        Label(name: "traffic sign", id: 20, trainId: 7, color: (220, 220, 0)),
        Label(name: "vegetation", id: 21, trainId: 8, color: (107, 142, 35)),
        Label(name: "terrain", id: 22, trainId: 9, color: (152, 251, 152)),
        Label(name: "sky", id: 23, trainId: 10, color: (70, 130, 180)),
        Label(name: "person", id: 24, trainId: 11, color: (220, 20, 60)),
        Label(name: "rider", id: 25, trainId: 12, color: (255, 0, 0)),
        Label(name: "car", id: 26, trainId: 13, color: (0, 0, 142)),
        Label(name: "truck", id: 27, trainId: 14, color: (0, 0, 70)),
        Label(name: "bus", id: 28, trainId: 15, color: (0, 60, 100)),
        Label(name: "caravan", id: 29, trainId: 255, color: (0, 0, 90)),
        Label(name: "trailer", id: 30, trainId: 255, color: (0, 0, 110)),
        Label(name: "train", id: 31, trainId: 16, color: (0, 80, 100)),
        Label(name: "motorcycle", id: 32, trainId: 17, color: (0, 0, 230)),
        Label(name: "bicycle", id: 33, trainId: 18, color: (119, 11, 32)),
    ]

    public static let classCount = 19
    public static let ignoreLabel: UInt8 = 255

    /// The 19 train classes in train-id order.
    public static let classNames: [String] = trainLabels.map(\.name)

    /// The official colour of each train id.
    public static let palette: [(UInt8, UInt8, UInt8)] = trainLabels.map(\.color)

    /// The label id of each train id (road 7, sidewalk 8, ...).
    public static let labelIds: [Int] = trainLabels.map(\.id)

    private static let trainLabels: [Label] = labels.filter { $0.trainId != 255 }.sorted { $0.trainId < $1.trainId }

    private static let trainIdOfLabelId: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for l in labels { table[l.id] = l.trainId }
        return table
    }()

    /// Cityscapes label id -> train id; ids without a train class (and anything out of range) -> 255.
    public static func trainId(labelId: Int) -> UInt8 {
        (0..<256).contains(labelId) ? trainIdOfLabelId[labelId] : ignoreLabel
    }

    /// A map of label ids (as GTA5 and `*_gtFine_labelIds.png` store them) as train ids.
    public static func trainIds(fromLabelIds map: LabelMap) -> LabelMap {
        let table = trainIdOfLabelId
        return LabelMap(width: map.width, height: map.height, ids: map.ids.map { table[Int($0)] })
    }

    /// Train ids in their palette colours; 255 (and any id without a class) black.
    public static func colorize(_ labels: LabelMap) -> Image {
        var lut = [UInt8](repeating: 0, count: 256 * 3)
        for (c, rgb) in palette.enumerated() { lut[c * 3] = rgb.0; lut[c * 3 + 1] = rgb.1; lut[c * 3 + 2] = rgb.2 }
        var pixels = [UInt8](repeating: 0, count: labels.ids.count * 3)
        for (p, id) in labels.ids.enumerated() {
            let k = Int(id) * 3
            pixels[p * 3] = lut[k]; pixels[p * 3 + 1] = lut[k + 1]; pixels[p * 3 + 2] = lut[k + 2]
        }
        return Image(width: labels.width, height: labels.height, channels: 3, pixels: pixels)
    }

    /// A colour mask (train-id palette) back to train ids; colours not in the palette -> 255.
    public static func labels(fromColors image: Image) throws -> LabelMap {
        try image.validate("colour mask")
        guard image.channels == 3 else { throw FileError("colour mask", "has \(image.channels) channel(s); a colour mask is RGB") }
        var byColor: [UInt32: UInt8] = [:]
        for (c, rgb) in palette.enumerated() { byColor[UInt32(rgb.0) << 16 | UInt32(rgb.1) << 8 | UInt32(rgb.2)] = UInt8(c) }
        var ids = [UInt8](repeating: ignoreLabel, count: image.width * image.height)
        for p in ids.indices {
            let key = UInt32(image.pixels[p * 3]) << 16 | UInt32(image.pixels[p * 3 + 1]) << 8 | UInt32(image.pixels[p * 3 + 2])
            if let c = byColor[key] { ids[p] = c }
        }
        return LabelMap(width: image.width, height: image.height, ids: ids)
    }

    /// The train ids (0...18) present, ascending.
    public static func classes(present labels: LabelMap) -> [Int] {
        let h = labels.histogram()
        return (0..<classCount).filter { h[$0] > 0 }
    }

    /// The class names joined by spaces, in class-id order: "road sidewalk building sky car".
    public static func caption(classes: [Int]) -> String {
        Set(classes.filter { (0..<classCount).contains($0) }).sorted().map { classNames[$0] }.joined(separator: " ")
    }
}

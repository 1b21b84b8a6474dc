@testable import DGData
import DGTensor
import XCTest

final class CityscapesTests: XCTestCase {
    /// cityscapesScripts' labels.py, ids 0...33: (trainId or 255, colour).
    func testLabelTableMatchesTheOfficialOne() {
        let official: [(Int, UInt8, (UInt8, UInt8, UInt8))] = [
            (0, 255, (0, 0, 0)), (1, 255, (0, 0, 0)), (2, 255, (0, 0, 0)), (3, 255, (0, 0, 0)), (4, 255, (0, 0, 0)),
            (5, 255, (111, 74, 0)), (6, 255, (81, 0, 81)), (7, 0, (128, 64, 128)), (8, 1, (244, 35, 232)),
            (9, 255, (250, 170, 160)), (10, 255, (230, 150, 140)), (11, 2, (70, 70, 70)), (12, 3, (102, 102, 156)),
            (13, 4, (190, 153, 153)), (14, 255, (180, 165, 180)), (15, 255, (150, 100, 100)), (16, 255, (150, 120, 90)),
            (17, 5, (153, 153, 153)), (18, 255, (153, 153, 153)), (19, 6, (250, 170, 30)), (20, 7, (220, 220, 0)),
            (21, 8, (107, 142, 35)), (22, 9, (152, 251, 152)), (23, 10, (70, 130, 180)), (24, 11, (220, 20, 60)),
            (25, 12, (255, 0, 0)), (26, 13, (0, 0, 142)), (27, 14, (0, 0, 70)), (28, 15, (0, 60, 100)),
            (29, 255, (0, 0, 90)), (30, 255, (0, 0, 110)), (31, 16, (0, 80, 100)), (32, 17, (0, 0, 230)), (33, 18, (119, 11, 32)),
        ]
        XCTAssertEqual(Cityscapes.labels.count, 34)
        for (id, train, color) in official {
            XCTAssertEqual(Cityscapes.trainId(labelId: id), train, "label id \(id)")
            XCTAssertEqual(Cityscapes.labels[id].id, id)
            XCTAssertTrue(Cityscapes.labels[id].color == color, "colour of \(id)")
        }
        for id in [-1, 34, 100, 255, 256, 1000] { XCTAssertEqual(Cityscapes.trainId(labelId: id), 255) }
        XCTAssertEqual(Cityscapes.classNames, ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                                               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                                               "motorcycle", "bicycle"])
        XCTAssertEqual(Cityscapes.labelIds, [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])
        XCTAssertEqual(Cityscapes.palette.count, 19)
        XCTAssertTrue(Cityscapes.palette[13] == (0, 0, 142) && Cityscapes.palette[18] == (119, 11, 32))
    }

    func testColorsRoundTripAndCaptions() throws {
        let ids: [UInt8] = Array(0...18) + [255, 255, 0]
        let map = LabelMap(width: 11, height: 2, ids: ids)
        let colored = Cityscapes.colorize(map)
        XCTAssertEqual(try Cityscapes.labels(fromColors: colored), map)
        var odd = colored
        odd.pixels[0] = 1  // (1, 64, 128) is no class colour
        XCTAssertEqual(try Cityscapes.labels(fromColors: odd).ids[0], 255)
        XCTAssertThrowsError(try Cityscapes.labels(fromColors: Image(width: 2, height: 1, channels: 1, pixels: [0, 0])))

        let labelIds = LabelMap(width: 4, height: 1, ids: [7, 26, 10, 0])
        XCTAssertEqual(Cityscapes.trainIds(fromLabelIds: labelIds).ids, [0, 13, 255, 255])

        let scene = LabelMap(width: 5, height: 1, ids: [13, 0, 10, 255, 1])
        XCTAssertEqual(Cityscapes.classes(present: scene), [0, 1, 10, 13])
        XCTAssertEqual(Cityscapes.caption(classes: Cityscapes.classes(present: scene)), "road sidewalk sky car")
        XCTAssertEqual(Cityscapes.caption(classes: [13, 2, 2, 255, 0]), "road building car")
        XCTAssertEqual(Cityscapes.caption(classes: []), "")
    }
}

final class ImageOpsTests: XCTestCase {
    func testTensorRoundTripAndRounding() {
        let image = Image(width: 16, height: 16, channels: 3, pixels: (0..<768).map { UInt8($0 % 256) })
        let t = image.tensor()
        XCTAssertEqual(t.shape, [1, 3, 16, 16])
        let f = t.floats
        XCTAssertEqual(f[0], -1)                   // pixel 0, red = 0
        XCTAssertEqual(f[85], 1)                   // pixel 85, red = 255
        XCTAssertEqual(Image(tensor: t), image)
        XCTAssertEqual(Image(tensor: t.reshaped([3, 16, 16])), image)

        let odd = Tensor(shape: [1, 1, 1, 6], floats: [-3, 3, .nan, 0, 0.002, -0.002])
        // round(clamp(x / 2 + 0.5, 0, 1) * 255): 0.501 * 255 = 127.755 -> 128; 0.499 * 255 = 127.245 -> 127.
        XCTAssertEqual(Image(tensor: odd).pixels, [0, 255, 0, 128, 128, 127])

        let two = Image.batchTensor([image, image])
        XCTAssertEqual(two.shape, [2, 3, 16, 16])
        XCTAssertEqual(Image(tensor: two, index: 1), image)
        let labels = LabelMap(width: 3, height: 1, ids: [0, 18, 255])
        XCTAssertEqual(labels.tensor().shape, [1, 1, 3])
        XCTAssertEqual(labels.tensor().floats, [0, 18, 255])
    }

    func testCropsAndComposites() {
        let image = Image(width: 4, height: 3, channels: 1, pixels: Array(0..<12))
        XCTAssertEqual(image.cropped(CropRect(x: 1, y: 1, width: 2, height: 2)).pixels, [5, 6, 9, 10])
        let labels = LabelMap(width: 4, height: 3, ids: Array(0..<12))
        XCTAssertEqual(labels.cropped(CropRect(x: 2, y: 0, width: 2, height: 3)).ids, [2, 3, 6, 7, 10, 11])
        XCTAssertEqual(CropRect.centred(on: 0, 0, width: 2, height: 2, boundsWidth: 4, boundsHeight: 3), CropRect(x: 0, y: 0, width: 2, height: 2))
        XCTAssertEqual(CropRect.centred(on: 3, 2, width: 2, height: 2, boundsWidth: 4, boundsHeight: 3), CropRect(x: 2, y: 1, width: 2, height: 2))
        let side = Image.sideBySide([image, image.rgb()])
        XCTAssertEqual(side.width, 8)
        XCTAssertEqual(side.channels, 3)
        XCTAssertEqual(Array(side.pixels[((4 + 1) * 3)..<((4 + 1) * 3 + 3)]), [1, 1, 1])
        let black = Image(width: 4, height: 3, fill: [0]), white = Image(width: 4, height: 3, fill: [255])
        XCTAssertEqual(black.blended(with: white, alpha: 0.5).pixels, [UInt8](repeating: 128, count: 12))
    }

    /// Against Pillow 13's Image.resize on a 7x5 grey image (NEAREST, BILINEAR, LANCZOS), byte
    /// for byte: MRLF's 2x Lanczos upsampling is the one DGInStyle's Python code computes.
    func testResizeMatchesPillow() {
        let src: [UInt8] = [0, 37, 74, 111, 148, 185, 222, 53, 101, 149, 197, 245, 37, 85, 106, 165, 224, 27, 9, 68, 127, 159, 229,
                            43, 36, 106, 99, 169, 212, 37, 41, 122, 126, 207, 211]
        let image = Image(width: 7, height: 5, channels: 1, pixels: src)
        let references: [(ResizeFilter, Int, Int, [UInt8])] = [
            (.lanczos, 14, 10, [0, 0, 19, 42, 60, 74, 88, 98, 114, 143, 185, 221, 239, 243, 7, 13, 34, 56, 74, 95, 122, 153, 176, 176, 158, 162, 185, 199, 33, 43, 67, 90, 107, 131, 167, 221, 253, 211, 107, 66, 99, 129, 65, 75, 98, 141, 179, 186, 170, 187, 210, 165, 56, 17, 53, 86, 92, 99, 118, 180, 234, 206, 110, 49, 51, 54, 45, 65, 95, 113, 107, 131, 171, 218, 219, 150, 44, 0, 0, 16, 50, 99, 133, 147, 124, 171, 232, 230, 136, 48, 11, 20, 54, 72, 70, 100, 144, 167, 169, 187, 199, 148, 54, 11, 39, 87, 118, 129, 125, 141, 172, 189, 219, 183, 116, 45, 24, 45, 89, 117, 124, 140, 174, 198, 205, 205, 245, 176, 62, 0, 17, 77, 123, 133, 122, 141, 199, 228, 221, 210]),
            (.lanczos, 3, 2, [87, 137, 119, 149, 77, 135]),
            (.lanczos, 10, 7, [0, 13, 45, 68, 91, 108, 137, 181, 221, 235, 22, 44, 75, 99, 144, 209, 224, 127, 110, 152, 68, 88, 144, 191, 171, 187, 187, 54, 29, 81, 103, 125, 198, 228, 98, 0, 12, 47, 104, 130, 128, 207, 232, 103, 16, 22, 62, 68, 118, 162, 188, 181, 108, 24, 47, 106, 133, 145, 172, 195, 232, 116, 0, 40, 110, 129, 127, 195, 223, 211]),
            (.bilinear, 14, 10, [0, 9, 28, 46, 65, 83, 102, 120, 139, 157, 176, 194, 213, 222, 13, 23, 43, 63, 83, 103, 123, 142, 163, 166, 154, 158, 178, 188, 40, 51, 74, 96, 119, 142, 164, 187, 210, 184, 111, 85, 108, 119, 66, 79, 104, 130, 155, 165, 158, 163, 178, 151, 80, 58, 83, 96, 93, 107, 135, 163, 191, 172, 103, 70, 69, 66, 62, 75, 102, 117, 119, 135, 166, 181, 179, 142, 67, 31, 33, 44, 65, 92, 122, 138, 146, 163, 197, 182, 120, 75, 48, 46, 70, 84, 89, 109, 142, 159, 172, 175, 179, 147, 78, 46, 54, 71, 98, 115, 123, 140, 167, 180, 199, 170, 114, 74, 53, 56, 86, 106, 116, 136, 166, 185, 196, 201, 212, 168, 81, 38, 40, 61, 102, 123, 125, 146, 187, 208, 210, 211]),
            (.bilinear, 3, 2, [92, 131, 124, 139, 88, 134]),
            (.nearest, 3, 2, [101, 197, 37, 229, 36, 99]),
        ]
        for (filter, w, h, expected) in references {
            let out = image.resized(width: w, height: h, filter: filter)
            XCTAssertEqual(out.pixels, expected, "\(filter) \(w)x\(h)")
        }
        // Nearest 2x replicates pixels exactly, for images and label maps.
        let up = image.resized(width: 14, height: 10, filter: .nearest)
        for y in 0..<10 { for x in 0..<14 { XCTAssertEqual(up.pixels[y * 14 + x], src[(y / 2) * 7 + x / 2]) } }
        let labels = LabelMap(width: 7, height: 5, ids: src).resized(width: 14, height: 10)
        XCTAssertEqual(labels.ids, up.pixels)
        // Constant images stay constant under every filter, in RGB too.
        let flat = Image(width: 9, height: 6, fill: [10, 200, 77])
        for filter in ResizeFilter.allCases {
            for (w, h) in [(18, 12), (4, 3), (13, 5)] {
                XCTAssertEqual(flat.resized(width: w, height: h, filter: filter), Image(width: w, height: h, fill: [10, 200, 77]), "\(filter)")
            }
        }
    }
}

import DGBase
import DGTensor
import Foundation
import XCTest
@testable import DGDiffusion

/// Label maps drawn as text: one character per pixel, '.' = 255 (ignore), digits and letters
/// (a = 10, ...) = class ids.
func drawn(_ rows: [String]) -> (ids: [UInt8], width: Int, height: Int) {
    let ids = rows.flatMap { row in
        row.map { c -> UInt8 in
            if c == "." { return 255 }
            if let d = c.wholeNumberValue { return UInt8(d) }
            return UInt8(c.asciiValue! - Character("a").asciiValue! + 10)
        }
    }
    return (ids, rows[0].count, rows.count)
}

final class ConnectedComponentTests: XCTestCase {
    /// Diagonal neighbours join with 8-connectivity only.
    func testDiagonalsJoinOnlyWithEightConnectivity() {
        let m = drawn([
            "1...",
            ".1..",
            "..1.",
            "...1",
        ])
        let eight = ConnectedComponents(ids: m.ids, width: m.width, height: m.height, connectivity: 8)
        XCTAssertEqual(eight.areas, [4])
        let four = ConnectedComponents(ids: m.ids, width: m.width, height: m.height, connectivity: 4)
        XCTAssertEqual(four.areas, [1, 1, 1, 1])
        XCTAssertEqual(four.labels, [1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4])
    }

    /// Touching regions of different classes stay apart; one class in two places makes two
    /// components; a U shape whose arms meet only at the bottom is one (the union-find case a
    /// single pass gets wrong).
    func testComponentsArePerClassAndMergeLate() {
        let m = drawn([
            "1100202",
            "1100202",
            "0000202",
            "3300222",
            "3311...",
        ])
        let cc = ConnectedComponents(ids: m.ids, width: m.width, height: m.height, connectivity: 8)
        // Raster order of first pixels: 1 (top left), 0, the U of 2s, the 0s inside the U, 3, 1.
        XCTAssertEqual(cc.classes, [1, 0, 2, 0, 3, 1])
        XCTAssertEqual(cc.areas, [4, 10, 9, 3, 4, 2])
        XCTAssertEqual(cc.labels[m.width * 4 + 4], 0, "ignored pixels belong to no component")
        XCTAssertEqual(cc.labels[4], cc.labels[6], "the U's arms are one component")
        XCTAssertEqual(cc.labels[4], 3)
        let four = ConnectedComponents(ids: m.ids, width: m.width, height: m.height, connectivity: 4)
        XCTAssertEqual(four.areas.reduce(0, +), m.ids.filter { $0 != 255 }.count)
    }

    /// Area thresholds are strict (more than N pixels), per component, not per class.
    func testLargeMaskUsesStrictAreaPerComponent() {
        let m = drawn([
            "0000.11",
            "0000.11",
            "0000...",
            "......1",
        ])
        let cc = ConnectedComponents(ids: m.ids, width: m.width, height: m.height)
        XCTAssertEqual(cc.areas, [12, 4, 1])
        let mask4 = cc.mask(largerThan: 4)
        XCTAssertEqual(mask4.filter { $0 }.count, 12, "the 4-pixel block is not more than 4")
        let mask3 = cc.mask(largerThan: 3)
        XCTAssertEqual(mask3.filter { $0 }.count, 16, "the lone class-1 pixel is its own component")
        XCTAssertFalse(mask3[m.width * 3 + 6])
        XCTAssertEqual(cc.mask(largerThan: 12).filter { $0 }.count, 0)
    }

    /// A large random map: every component is connected and maximal (checked by flood fill).
    func testAgainstFloodFillOnRandomMaps() {
        var state: UInt64 = 12345
        func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
        for connectivity in [4, 8] {
            let (w, h) = (37, 23)
            let ids = (0..<(w * h)).map { _ in UInt8([0, 1, 2, 255][next() % 4]) }
            let cc = ConnectedComponents(ids: ids, width: w, height: h, connectivity: connectivity)
            var seen = [Int32](repeating: 0, count: w * h)
            var count: Int32 = 0
            for start in 0..<(w * h) where ids[start] != 255 && seen[start] == 0 {
                count += 1
                var stack = [start]
                seen[start] = count
                var area = 0
                while let p = stack.popLast() {
                    area += 1
                    XCTAssertEqual(cc.labels[p], cc.labels[start])
                    let (x, y) = (p % w, p / w)
                    for dy in -1...1 { for dx in -1...1 where (dx != 0 || dy != 0) && (connectivity == 8 || dx == 0 || dy == 0) {
                        let (nx, ny) = (x + dx, y + dy)
                        guard nx >= 0, nx < w, ny >= 0, ny < h else { continue }
                        let q = ny * w + nx
                        if seen[q] == 0 && ids[q] == ids[start] { seen[q] = count; stack.append(q) }
                    } }
                }
                XCTAssertEqual(cc.labels[start], count, "numbered in raster order")
                XCTAssertEqual(cc.areas[Int(count) - 1], area)
            }
            XCTAssertEqual(cc.count, Int(count))
        }
    }
}

final class ResizeAndWindowTests: XCTestCase {
    func testWindowsCoverEverything() {
        XCTAssertEqual(windowStarts(size: 128, window: 64, stride: 16), [0, 16, 32, 48, 64])
        XCTAssertEqual(windowStarts(size: 32, window: 16, stride: 4), [0, 4, 8, 12, 16])
        XCTAssertEqual(windowStarts(size: 32, window: 16, stride: 6), [0, 6, 12, 16])
        XCTAssertEqual(windowStarts(size: 16, window: 16, stride: 4), [0])
        let o = MRLFOptions.scaled(resolution: 128)
        XCTAssertEqual(o.stride, 4)
        XCTAssertEqual(o.largeArea, 1875)
        XCTAssertEqual(MRLFOptions.scaled(resolution: 512).stride, 16)
        XCTAssertEqual(MRLFOptions.scaled(resolution: 512).largeArea, 30000)
    }

    /// MRLF's anchor noise, on SD 1.5's schedule with 4 DDIM steps (timesteps 751, 501, 251, 1):
    /// after step 0 the reference's level is ᾱ at t - 1 = 750, the other the next timestep's (501).
    /// The ᾱ values are numpy's cumprod(1 - linspace(sqrt(0.00085), sqrt(0.012), 1000)^2).
    func testAnchorNoiseLevels() throws {
        let config = try JSON.parse(bytes: Array("""
            {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "set_alpha_to_one": false, "steps_offset": 1, "timestep_spacing": "leading"}
            """.utf8))
        let ddim = try DDIMScheduler(try NoiseSchedule(config: config), steps: 4)
        XCTAssertEqual(ddim.timesteps, [751, 501, 251, 1])
        let x0 = Tensor(shape: [1, 1, 1, 2], floats: [1, 2]), noise = Tensor(shape: [1, 1, 1, 2], floats: [0.5, -1])
        func expected(_ ac: Double) -> [Float] {
            zip(x0.floats, noise.floats).map { Float(ac.squareRoot() * Double($0) + (1 - ac).squareRoot() * Double($1)) }
        }
        XCTAssertEqual(MRLFAnchorNoise.reference, .previousTimestep)
        let ref = MRLFAnchorNoise.previousTimestep.noised(x0, noise: noise, scheduler: ddim, index: 0).floats
        let next = MRLFAnchorNoise.next.noised(x0, noise: noise, scheduler: ddim, index: 0).floats
        for (a, b) in zip(ref, expected(0.05616984800293729)) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        for (a, b) in zip(next, expected(0.2749990668501319)) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        XCTAssertNotEqual(ref, next)
        // After the last step (t = 1) the reference keeps ᾱ_0 = 1 - β_0, a little noise.
        let last = MRLFAnchorNoise.previousTimestep.noised(x0, noise: noise, scheduler: ddim, index: 3).floats
        for (a, b) in zip(last, expected(0.99915)) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }

    /// Lanczos keeps constants, interpolates smooth signals closely both ways, and its
    /// coefficients are PIL's (support 3, widened by the scale when shrinking, normalised).
    func testLanczos() {
        let constant = Tensor(shape: [1, 1, 4, 6], floats: [Float](repeating: 0.25, count: 24))
        for v in Resize.lanczos(constant, height: 8, width: 12).floats { XCTAssertEqual(v, 0.25, accuracy: 1e-6) }
        let (h, w) = (16, 16)
        let smooth = Tensor(shape: [1, 1, h, w], floats: (0..<(h * w)).map { i in
            Float(sin(Double(i % w) * 0.3) * cos(Double(i / w) * 0.2))
        })
        let up = Resize.lanczos(smooth, height: 32, width: 32)
        let back = Resize.lanczos(up, height: 16, width: 16)
        XCTAssertLessThan(relativeError(Array(back.floats), smooth.floats), 0.05)
        let c = Resize.coefficients(inSize: 8, outSize: 16)
        XCTAssertEqual(c[0].0, 0)
        XCTAssertEqual(c[0].1.count, 3, "centre 0.25: inputs 0...2 within support 3 of it")
        XCTAssertEqual(c[0].1.reduce(0, +), 1, accuracy: 1e-12)
        let down = Resize.coefficients(inSize: 16, outSize: 8)
        XCTAssertEqual(down[4].1.count, 12, "shrinking by 2 doubles the support")
        let same = Resize.lanczos(smooth, height: h, width: w)
        XCTAssertLessThan(relativeError(same.floats, smooth.floats), 1e-6, "same size is the identity")
    }

    func testNearest() {
        let t = Tensor(shape: [1, 1, 2, 2], floats: [1, 2, 3, 4])
        XCTAssertEqual(Resize.nearest(t, height: 4, width: 4).floats, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        XCTAssertEqual(Resize.nearest(labels: [1, 2, 3, 4], width: 2, height: 2, toWidth: 4, toHeight: 2), [1, 1, 2, 2, 3, 3, 4, 4])
        XCTAssertEqual(Resize.nearest(Resize.nearest(t, height: 4, width: 4), height: 2, width: 2).floats, t.floats)
    }

    func testOneHot() {
        let c = SemanticCondition.oneHot(ids: [0, 18, 255, 7], width: 2, height: 2)
        XCTAssertEqual(c.shape, [1, 20, 2, 2])
        let v = c.floats
        XCTAssertEqual(v[0 * 4 + 0], 1)
        XCTAssertEqual(v[18 * 4 + 1], 1)
        XCTAssertEqual(v[19 * 4 + 2], 1)
        XCTAssertEqual(v[7 * 4 + 3], 1)
        XCTAssertEqual(v.reduce(0, +), 4)
    }
}

import XCTest
@testable import DGTensor

final class HalfPrecisionTests: XCTestCase {
    func testEveryFloat16RoundTripsThroughFloat32() {
        for bits in 0...UInt16.max {
            let f = floatFromFloat16Bits(bits)
            #if arch(x86_64) || arch(arm64)
            let reference = Float(Float16(bitPattern: bits))
            if reference.isNaN { XCTAssertTrue(f.isNaN); continue }
            XCTAssertEqual(f.bitPattern, reference.bitPattern, "f16 \(bits)")
            #endif
            XCTAssertEqual(float16Bits(f), bits, "f16 \(bits) does not round-trip")
        }
    }

    func testFloat32ToFloat16RoundsToNearestEven() {
        // Swift's Float16(Float) is correctly rounded (nearest even); compare on a dense sweep
        // of bit patterns plus every halfway case around the subnormal and overflow boundaries.
        var x: UInt32 = 0
        while x < 0xFF80_0000 {
            let f = Float(bitPattern: x)
            if !f.isNaN {
                XCTAssertEqual(float16Bits(f), Float16(f).bitPattern, "f32 bits \(String(x, radix: 16))")
            }
            x &+= 0x1F3
        }
        for h in UInt16(0)..<0x7C00 {
            let lo = floatFromFloat16Bits(h), hi = floatFromFloat16Bits(h + 1)
            let mid = (Double(lo) + Double(hi)) / 2
            let f = Float(mid)
            XCTAssertEqual(float16Bits(f), Float16(f).bitPattern)
            XCTAssertEqual(float16Bits(-f), Float16(-f).bitPattern)
        }
        XCTAssertEqual(float16Bits(65520), 0x7C00)  // halfway to the next binade rounds to inf
        XCTAssertEqual(float16Bits(65519.996), 0x7BFF)
    }

    func testBFloat16RoundsToNearestEven() {
        XCTAssertEqual(bfloat16Bits(Float(bitPattern: 0x3F80_8000)), 0x3F80)  // tie, even stays
        XCTAssertEqual(bfloat16Bits(Float(bitPattern: 0x3F81_8000)), 0x3F82)  // tie, odd goes up
        XCTAssertEqual(bfloat16Bits(Float(bitPattern: 0x3F80_8001)), 0x3F81)
        XCTAssertEqual(bfloat16Bits(Float(bitPattern: 0x7F7F_FFFF)), 0x7F80)  // max rounds to inf
        XCTAssertTrue(floatFromBFloat16Bits(bfloat16Bits(.nan)).isNaN)
        for bits in stride(from: 0, through: Int(UInt16.max), by: 1) {
            let b = UInt16(bits)
            let f = floatFromBFloat16Bits(b)
            if f.isNaN { continue }
            XCTAssertEqual(bfloat16Bits(f), b)
        }
    }
}

/// Bit-exact float16 / bfloat16 <-> float32 conversion, round-to-nearest-even, as the
/// hardware (and PyTorch) does it. Written on bit patterns so that results do not depend
/// on which instructions the compiler happens to use.
@inline(__always)
public func float16Bits(_ value: Float) -> UInt16 {
    let x = value.bitPattern
    let sign = UInt16(truncatingIfNeeded: (x >> 16) & 0x8000)
    let exponent = Int((x >> 23) & 0xFF)
    var mantissa = x & 0x7F_FFFF
    if exponent == 0xFF {  // inf stays inf; NaN stays a quiet NaN with its top payload bits
        return sign | 0x7C00 | (mantissa != 0 ? UInt16(truncatingIfNeeded: 0x200 | (mantissa >> 13)) : 0)
    }
    let e = exponent - 127 + 15
    if e >= 0x1F { return sign | 0x7C00 }
    if e <= 0 {
        if e < -10 { return sign }
        mantissa |= 0x80_0000
        let shift = UInt32(14 - e)
        let half = UInt32(1) << (shift - 1)
        let rest = mantissa & ((UInt32(1) << shift) - 1)
        var h = mantissa >> shift
        if rest > half || (rest == half && h & 1 == 1) { h += 1 }
        return sign | UInt16(truncatingIfNeeded: h)
    }
    var h = UInt32(e << 10) | (mantissa >> 13)
    let rest = mantissa & 0x1FFF
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) { h += 1 }
    return sign | UInt16(truncatingIfNeeded: h)
}

@inline(__always)
public func floatFromFloat16Bits(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1F)
    var mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    if exponent == 0 {
        if mantissa == 0 { return Float(bitPattern: sign) }
        var e: UInt32 = 127 - 15 + 1
        while mantissa & 0x400 == 0 { mantissa <<= 1; e -= 1 }
        return Float(bitPattern: sign | (e << 23) | ((mantissa & 0x3FF) << 13))
    }
    return Float(bitPattern: sign | ((exponent + 127 - 15) << 23) | (mantissa << 13))
}

@inline(__always)
public func bfloat16Bits(_ value: Float) -> UInt16 {
    let x = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: (x >> 16) | 0x40) }
    let rounding = UInt32(0x7FFF) + ((x >> 16) & 1)
    return UInt16(truncatingIfNeeded: (x &+ rounding) >> 16)
}

@inline(__always)
public func floatFromBFloat16Bits(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

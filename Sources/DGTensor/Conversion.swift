/// Element type conversion. Every pair goes through one float32/float64/int64 read and one
/// write per element; the 16-bit float paths round to nearest even.
extension Tensor {
    public func converted(to target: DType) -> Tensor {
        precondition(dtype.isConvertible && target.isConvertible, "cannot convert \(dtype.name) to \(target.name)")
        let source = contiguous()
        if target == dtype { return source }
        let out = Tensor(uninitialized: shape, dtype: target)
        let src = UnsafeRawPointer(source.rawPointer)
        let dst = out.rawPointer
        let from = dtype
        Parallel.forEach(count, minimumChunk: 65536) { range in
            if convertFast(src, from, dst, target, range) { return }
            if from.isFloatingPoint || target.isFloatingPoint {
                for i in range { writeDouble(readDouble(src, from, i), dst, target, i) }
            } else {
                for i in range { writeInt(readInt(src, from, i), dst, target, i) }
            }
        }
        return out
    }
}

/// The conversions checkpoints spend their time in, as tight loops.
@inline(__always)
private func convertFast(_ src: UnsafeRawPointer, _ from: DType, _ dst: UnsafeMutableRawPointer, _ to: DType, _ r: Range<Int>) -> Bool {
    switch (from, to) {
    case (.f32, .f16), (.f32, .bf16):
        let s = src.assumingMemoryBound(to: Float.self)
        let d = dst.assumingMemoryBound(to: UInt16.self)
        if to == .f16 { for i in r { d[i] = float16Bits(s[i]) } } else { for i in r { d[i] = bfloat16Bits(s[i]) } }
        return true
    case (.f16, .f32), (.bf16, .f32):
        let s = src.assumingMemoryBound(to: UInt16.self)
        let d = dst.assumingMemoryBound(to: Float.self)
        if from == .f16 { for i in r { d[i] = floatFromFloat16Bits(s[i]) } } else { for i in r { d[i] = floatFromBFloat16Bits(s[i]) } }
        return true
    default:
        return false
    }
}

@inline(__always)
private func readDouble(_ p: UnsafeRawPointer, _ t: DType, _ i: Int) -> Double {
    switch t {
    case .f64: return p.load(fromByteOffset: i * 8, as: Double.self)
    case .f32: return Double(p.load(fromByteOffset: i * 4, as: Float.self))
    case .f16: return Double(floatFromFloat16Bits(p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
    case .bf16: return Double(floatFromBFloat16Bits(p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
    default: return Double(readInt(p, t, i))
    }
}

@inline(__always)
private func writeDouble(_ v: Double, _ p: UnsafeMutableRawPointer, _ t: DType, _ i: Int) {
    switch t {
    case .f64: p.storeBytes(of: v, toByteOffset: i * 8, as: Double.self)
    case .f32: p.storeBytes(of: Float(v), toByteOffset: i * 4, as: Float.self)
    // Through Float first: f32 -> f16 is the rounding users expect (double rounding from an
    // f64 source is the same as PyTorch's .half() on a float tensor).
    case .f16: p.storeBytes(of: float16Bits(Float(v)), toByteOffset: i * 2, as: UInt16.self)
    case .bf16: p.storeBytes(of: bfloat16Bits(Float(v)), toByteOffset: i * 2, as: UInt16.self)
    case .bool: p.storeBytes(of: v != 0 ? 1 : 0, toByteOffset: i, as: UInt8.self)
    default: writeInt(v.isFinite ? Int64(v.rounded(.towardZero)) : 0, p, t, i)
    }
}

@inline(__always)
private func readInt(_ p: UnsafeRawPointer, _ t: DType, _ i: Int) -> Int64 {
    switch t {
    case .i64: return p.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)
    case .i32: return Int64(p.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
    case .i16: return Int64(p.loadUnaligned(fromByteOffset: i * 2, as: Int16.self))
    case .i8: return Int64(p.load(fromByteOffset: i, as: Int8.self))
    case .u64: return Int64(bitPattern: p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
    case .u32: return Int64(p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
    case .u16: return Int64(p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
    case .u8, .bool: return Int64(p.load(fromByteOffset: i, as: UInt8.self))
    default: return Int64(readDouble(p, t, i))
    }
}

@inline(__always)
private func writeInt(_ v: Int64, _ p: UnsafeMutableRawPointer, _ t: DType, _ i: Int) {
    switch t {
    case .i64: p.storeBytes(of: v, toByteOffset: i * 8, as: Int64.self)
    case .i32: p.storeBytes(of: Int32(truncatingIfNeeded: v), toByteOffset: i * 4, as: Int32.self)
    case .i16: p.storeBytes(of: Int16(truncatingIfNeeded: v), toByteOffset: i * 2, as: Int16.self)
    case .i8: p.storeBytes(of: Int8(truncatingIfNeeded: v), toByteOffset: i, as: Int8.self)
    case .u64: p.storeBytes(of: UInt64(bitPattern: v), toByteOffset: i * 8, as: UInt64.self)
    case .u32: p.storeBytes(of: UInt32(truncatingIfNeeded: v), toByteOffset: i * 4, as: UInt32.self)
    case .u16: p.storeBytes(of: UInt16(truncatingIfNeeded: v), toByteOffset: i * 2, as: UInt16.self)
    case .u8: p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self)
    case .bool: p.storeBytes(of: v != 0 ? 1 : 0, toByteOffset: i, as: UInt8.self)
    default: writeDouble(Double(v), p, t, i)
    }
}

/// A dense, row-major, strided view of typed elements in a `TensorStorage`.
/// Views (reshape of a contiguous tensor, permute, slice) share storage; `contiguous()`
/// and `converted(to:)` copy.
public struct Tensor: @unchecked Sendable {
    public var storage: TensorStorage
    public var dtype: DType
    public var shape: [Int]
    public var strides: [Int]   // in elements
    public var offset: Int      // in elements

    public init(storage: TensorStorage, dtype: DType, shape: [Int], strides: [Int]? = nil, offset: Int = 0) {
        self.storage = storage
        self.dtype = dtype
        self.shape = shape
        self.strides = strides ?? Tensor.contiguousStrides(shape)
        self.offset = offset
    }

    /// A zero-filled tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        let count = shape.reduce(1, *)
        self.init(storage: TensorStorage(byteCount: count * dtype.byteSize), dtype: dtype, shape: shape)
    }

    /// A tensor whose values are undefined: for outputs that the caller overwrites entirely.
    public init(uninitialized shape: [Int], dtype: DType = .f32) {
        let count = shape.reduce(1, *)
        self.init(storage: TensorStorage(uninitializedByteCount: count * dtype.byteSize), dtype: dtype, shape: shape)
    }

    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) values")
        self.init(zeros: shape, dtype: .f32)
        floats.withUnsafeBufferPointer { src in
            storage.base.copyMemory(from: src.baseAddress!, byteCount: src.count * 4)
        }
    }

    /// A contiguous tensor holding a copy of `bytes`, which must be exactly shape x dtype size.
    public init(shape: [Int], dtype: DType, bytes: UnsafeRawBufferPointer) throws {
        let expected = shape.reduce(1, *) * dtype.byteSize
        guard bytes.count == expected else {
            throw TensorError.shape("\(bytes.count) bytes do not hold a \(dtype.name) tensor of shape \(shape)")
        }
        self.init(zeros: shape, dtype: dtype)
        if expected > 0 { storage.base.copyMemory(from: bytes.baseAddress!, byteCount: expected) }
    }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= shape[i]
        }
        return strides
    }

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var byteCount: Int { count * dtype.byteSize }

    public var isContiguous: Bool {
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != s { return false }
            s *= shape[i]
        }
        return true
    }

    /// The first element's address.
    public var rawPointer: UnsafeMutableRawPointer { storage.base + offset * dtype.byteSize }

    /// The bytes of a contiguous tensor. The pointer is valid only while the storage lives:
    /// prefer `withRawBytes`, which guarantees that.
    public var rawBytes: UnsafeRawBufferPointer {
        precondition(isContiguous, "rawBytes needs a contiguous tensor")
        return UnsafeRawBufferPointer(start: rawPointer, count: byteCount)
    }

    // The optimiser may free a tensor's storage right after its last use, which can be before
    // a pointer taken from it is done with: these keep the storage alive for the whole body.

    public func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(rawBytes) }
    }

    public func withFloats<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32 && isContiguous, "withFloats needs a contiguous f32 tensor")
        return try withExtendedLifetime(storage) {
            try body(UnsafeBufferPointer(start: rawPointer.assumingMemoryBound(to: Float.self), count: count))
        }
    }

    public func withMutableFloats<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32 && isContiguous, "withMutableFloats needs a contiguous f32 tensor")
        return try withExtendedLifetime(storage) {
            try body(UnsafeMutableBufferPointer(start: rawPointer.assumingMemoryBound(to: Float.self), count: count))
        }
    }

    /// The values as float32, in row-major order.
    public var floats: [Float] {
        let t = converted(to: .f32)
        return t.withFloats { Array($0) }
    }

    // MARK: views

    public func reshaped(_ newShape: [Int]) -> Tensor {
        var newShape = newShape
        if let i = newShape.firstIndex(of: -1) {
            newShape[i] = count / max(1, newShape.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *))
        }
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        let base = isContiguous ? self : contiguous()
        return Tensor(storage: base.storage, dtype: dtype, shape: newShape, offset: base.offset)
    }

    public func permuted(_ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<rank), "bad permutation \(order) for rank \(rank)")
        return Tensor(storage: storage, dtype: dtype, shape: order.map { shape[$0] },
                      strides: order.map { strides[$0] }, offset: offset)
    }

    public func transposed(_ a: Int, _ b: Int) -> Tensor {
        var order = Array(0..<rank)
        order.swapAt(a, b)
        return permuted(order)
    }

    /// Elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[axis], "slice \(range) out of \(shape[axis])")
        var s = shape
        s[axis] = range.count
        return Tensor(storage: storage, dtype: dtype, shape: s, strides: strides, offset: offset + range.lowerBound * strides[axis])
    }

    /// A fresh copy that owns its memory (never a view, never the memory map).
    public func copied() -> Tensor {
        let src = contiguous()
        let out = Tensor(uninitialized: shape, dtype: dtype)
        if byteCount > 0 { src.withRawBytes { out.rawPointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return out
    }

    /// A contiguous copy (or self when already contiguous).
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        var out = Tensor(uninitialized: shape, dtype: dtype)
        copyStrided(into: &out)
        return out
    }

    private func copyStrided(into out: inout Tensor) {
        let size = dtype.byteSize
        let src = storage.base
        let dst = out.rawPointer
        let rank = self.rank
        let shape = self.shape, strides = self.strides, base = offset
        // Trailing dimensions laid out contiguously (a slice along a leading axis: a channel
        // range of [N, C, H, W]) form runs that are copied whole.
        var run = 1, inner = rank
        while inner > 0 && strides[inner - 1] == run { run *= shape[inner - 1]; inner -= 1 }
        if run >= 16 && inner > 0 {
            let runBytes = run * size
            Parallel.forEach(count / run, minimumChunk: Swift.max(1, 65536 / run)) { range in
                for o in range {
                    var rem = o, off = base
                    for d in stride(from: inner - 1, through: 0, by: -1) {
                        off += (rem % shape[d]) * strides[d]
                        rem /= shape[d]
                    }
                    (dst + o * runBytes).copyMemory(from: src + off * size, byteCount: runBytes)
                }
            }
            return
        }
        Parallel.forEach(count, minimumChunk: 65536) { range in
            var index = [Int](repeating: 0, count: rank)
            var rem = range.lowerBound
            for d in stride(from: rank - 1, through: 0, by: -1) {
                index[d] = rem % shape[d]
                rem /= shape[d]
            }
            for linear in range {
                var off = base
                for d in 0..<rank { off += index[d] * strides[d] }
                (dst + linear * size).copyMemory(from: src + off * size, byteCount: size)
                var d = rank - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < shape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor(\(dtype.name), \(shape))" }
}

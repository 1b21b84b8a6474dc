import Foundation

/// Element-wise binary operations with numpy broadcasting, the reduction their backward needs
/// (`sumToShape`), scaling, and whole-tensor sums.
///
/// Broadcasting works on the operands' own strides (no broadcast copies, no `contiguous()` of
/// views): dimensions of size 1 are dropped, adjacent dimensions that are contiguous for both
/// operands are merged, and the innermost one runs as a flat loop specialised for operands that
/// are contiguous (stride 1) or constant (stride 0) along it.
extension Kernels {
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, AddOp.self) }
    public static func sub(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, SubOp.self) }
    public static func mul(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, MulOp.self) }
    public static func div(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, DivOp.self) }

    /// The numpy broadcast of two shapes, or nil when they are incompatible.
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = Swift.max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
        }
        return out
    }

    protocol BinaryOp { static func apply(_ a: Float, _ b: Float) -> Float }
    enum AddOp: BinaryOp { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
    enum SubOp: BinaryOp { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b } }
    enum MulOp: BinaryOp { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
    enum DivOp: BinaryOp { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b } }

    static func binary<Op: BinaryOp>(_ a: Tensor, _ b: Tensor, _: Op.Type) -> Tensor {
        guard let shape = broadcastShape(a.shape, b.shape) else {
            fatalError("cannot broadcast shapes \(a.shape) and \(b.shape)")
        }
        let ac = a.dtype == .f32 ? a : a.converted(to: .f32)
        let bc = b.dtype == .f32 ? b : b.converted(to: .f32)
        let out = Tensor(uninitialized: shape)
        defer { withExtendedLifetime((ac, bc, out)) {} }
        let count = out.count
        if count == 0 { return out }
        let ap = pointer(ac), bp = pointer(bc), op = pointer(out)

        // Broadcast strides in the output's rank, then drop size-1 dims and merge contiguous runs.
        let r = shape.count
        func strides(_ t: Tensor) -> [Int] {
            (0..<r).map { i in
                let j = i - (r - t.rank)
                return j < 0 || t.shape[j] == 1 ? 0 : t.strides[j]
            }
        }
        let sa0 = strides(ac), sb0 = strides(bc)
        var dims: [Int] = [], sa: [Int] = [], sb: [Int] = []
        for i in 0..<r where shape[i] != 1 {
            if let last = dims.last, sa.last! == sa0[i] * shape[i], sb.last! == sb0[i] * shape[i] {
                dims[dims.count - 1] = last * shape[i]
                sa[sa.count - 1] = sa0[i]; sb[sb.count - 1] = sb0[i]
            } else {
                dims.append(shape[i]); sa.append(sa0[i]); sb.append(sb0[i])
            }
        }
        if dims.isEmpty { op[0] = Op.apply(ap[0], bp[0]); return out }
        let inner = dims.removeLast(), ia = sa.removeLast(), ib = sb.removeLast()
        let outer = count / inner
        let outerDims = dims, outerA = sa, outerB = sb

        @inline(__always) func row(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>) {
            switch (ia, ib) {
            case (1, 1): for k in 0..<inner { o[k] = Op.apply(x[k], y[k]) }
            case (1, 0): let v = y[0]; for k in 0..<inner { o[k] = Op.apply(x[k], v) }
            case (0, 1): let v = x[0]; for k in 0..<inner { o[k] = Op.apply(v, y[k]) }
            default: for k in 0..<inner { o[k] = Op.apply(x[k * ia], y[k * ib]) }
            }
        }
        Parallel.forEach(outer, minimumChunk: grain(inner)) { range in
            // Odometer over the outer dimensions, starting at range.lowerBound.
            let nd = outerDims.count
            var index = [Int](repeating: 0, count: nd)
            var rem = range.lowerBound, offA = 0, offB = 0
            for d in stride(from: nd - 1, through: 0, by: -1) {
                index[d] = rem % outerDims[d]; rem /= outerDims[d]
                offA += index[d] * outerA[d]; offB += index[d] * outerB[d]
            }
            for o in range {
                row(ap + offA, bp + offB, op + o * inner)
                var d = nd - 1
                while d >= 0 {
                    index[d] += 1; offA += outerA[d]; offB += outerB[d]
                    if index[d] < outerDims[d] { break }
                    offA -= index[d] * outerA[d]; offB -= index[d] * outerB[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return out
    }

    /// Sums `x` down to `shape`, the shape of an operand that was broadcast to x's shape: dimensions
    /// where `shape` has 1 (or that it lacks, on the left) are summed away. Accumulates in Double;
    /// parallel partial sums are combined in chunk order.
    public static func sumToShape(_ x: Tensor, _ shape: [Int]) -> Tensor {
        let r = x.rank
        var target = shape
        while target.count > r, target.first == 1 { target.removeFirst() }
        if target.count > r { fatalError("sumToShape: cannot sum \(x.shape) to \(shape)") }
        target = [Int](repeating: 1, count: r - target.count) + target
        for i in 0..<r where target[i] != 1 && target[i] != x.shape[i] {
            fatalError("sumToShape: cannot sum \(x.shape) to \(shape)")
        }
        let xc = f32(x)
        let out = Tensor(uninitialized: shape)
        defer { withExtendedLifetime((xc, out)) {} }
        if x.count == 0 { out.rawPointer.initializeMemory(as: UInt8.self, repeating: 0, count: out.byteCount) }
        let xp = pointer(xc), op = pointer(out)
        let outCount = out.count
        if x.count == 0 { return out }

        // Merged dimensions (size, reduced), size-1 dimensions dropped.
        var dims: [(size: Int, reduce: Bool)] = []
        for i in 0..<r where x.shape[i] != 1 {
            let reduce = target[i] == 1
            if let last = dims.last, last.reduce == reduce { dims[dims.count - 1].size *= x.shape[i] } else {
                dims.append((x.shape[i], reduce))
            }
        }
        if !dims.contains(where: { $0.reduce }) {
            op.update(from: xp, count: outCount)
            return out
        }
        // Output strides of the dimensions (0 for reduced ones); x is contiguous.
        var outStrides = [Int](repeating: 0, count: dims.count), xStrides = outStrides
        var so = 1, sx = 1
        for d in stride(from: dims.count - 1, through: 0, by: -1) {
            xStrides[d] = sx; sx *= dims[d].size
            if !dims[d].reduce { outStrides[d] = so; so *= dims[d].size }
        }
        let first = dims[0], rest = Array(dims.dropFirst())
        let restOut = Array(outStrides.dropFirst()), restX = Array(xStrides.dropFirst())
        let firstX = xStrides[0], firstOut = outStrides[0]
        let sliceCount = x.count / first.size

        // Adds the slice x[i, ...] of the first dimension into acc (offset by the slice's output).
        func accumulate(_ xs: UnsafePointer<Float>, _ acc: UnsafeMutablePointer<Double>) {
            if rest.isEmpty { acc[0] += Double(xs[0]); return }
            let last = rest.count - 1, inner = rest[last].size
            let outer = sliceCount / inner
            var index = [Int](repeating: 0, count: last)
            var offX = 0, offO = 0
            for _ in 0..<outer {
                if rest[last].reduce {
                    acc[offO] += sum(xs + offX, inner)
                } else {
                    let a = acc + offO, s = xs + offX
                    for k in 0..<inner { a[k] += Double(s[k]) }
                }
                var d = last - 1
                while d >= 0 {
                    index[d] += 1; offX += restX[d]; offO += restOut[d]
                    if index[d] < rest[d].size { break }
                    offX -= index[d] * restX[d]; offO -= index[d] * restOut[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }

        if !first.reduce {
            // Each index of the first dimension owns its own output slice.
            let acc = UnsafeMutablePointer<Double>.allocate(capacity: outCount)
            defer { acc.deallocate() }
            acc.initialize(repeating: 0, count: outCount)
            Parallel.forEach(first.size, minimumChunk: grain(sliceCount)) { range in
                for i in range { accumulate(xp + i * firstX, acc + i * firstOut) }
                for i in range { for k in 0..<firstOut { op[i * firstOut + k] = Float(acc[i * firstOut + k]) } }
            }
        } else {
            let parts = Parallel.chunks(first.size, minimumChunk: grain(sliceCount))
            let acc = UnsafeMutablePointer<Double>.allocate(capacity: parts.count * outCount)
            defer { acc.deallocate() }
            acc.initialize(repeating: 0, count: parts.count * outCount)
            forEachChunk(first.size, minimumChunk: grain(sliceCount)) { ci, range in
                for i in range { accumulate(xp + i * firstX, acc + ci * outCount) }
            }
            Parallel.forEach(outCount, minimumChunk: 65536) { range in
                for k in range {
                    var s = acc[k]
                    for ci in 1..<Swift.max(1, parts.count) { s += acc[ci * outCount + k] }
                    op[k] = Float(s)
                }
            }
        }
        return out
    }

    public static func scale(_ x: Tensor, _ s: Float) -> Tensor {
        let xc = f32(x), out = Tensor(uninitialized: x.shape)
        defer { withExtendedLifetime((xc, out)) {} }
        let xp = pointer(xc), op = pointer(out)
        Parallel.forEach(x.count, minimumChunk: 65536) { r in
            for i in r { op[i] = xp[i] * s }
        }
        return out
    }

    /// a + s b, for tensors of the same shape.
    public static func addScaled(_ a: Tensor, _ b: Tensor, _ s: Float) -> Tensor {
        if a.shape != b.shape { fatalError("addScaled: shapes \(a.shape) and \(b.shape) differ") }
        let ac = f32(a), bc = f32(b), out = Tensor(uninitialized: a.shape)
        defer { withExtendedLifetime((ac, bc, out)) {} }
        let ap = pointer(ac), bp = pointer(bc), op = pointer(out)
        Parallel.forEach(a.count, minimumChunk: 65536) { r in
            for i in r { op[i] = ap[i] + s * bp[i] }
        }
        return out
    }

    /// The sum of all elements (Double accumulation, chunks combined in order).
    public static func sum(_ x: Tensor) -> Double {
        let xc = f32(x)
        return withExtendedLifetime(xc) {
            let p = pointer(xc)
            return Parallel.sum(xc.count, minimumChunk: 65536) { r in sum(p + r.lowerBound, r.count) }
        }
    }

    public static func mean(_ x: Tensor) -> Double { x.count == 0 ? .nan : sum(x) / Double(x.count) }
}

import Foundation

/// Embedding lookup and its backward (scatter-add).
extension Kernels {
    /// The integer ids of an I32 or I64 tensor, in row-major order.
    static func ids(_ t: Tensor) -> [Int] {
        switch t.dtype {
        case .i32:
            let c = t.contiguous()
            return withExtendedLifetime(c) {
                let p = c.rawPointer.assumingMemoryBound(to: Int32.self)
                return (0..<c.count).map { Int(p[$0]) }
            }
        case .i64:
            let c = t.contiguous()
            return withExtendedLifetime(c) {
                let p = c.rawPointer.assumingMemoryBound(to: Int64.self)
                return (0..<c.count).map { Int(p[$0]) }
            }
        default:
            fatalError("embedding: ids must be I32 or I64, got \(t.dtype.name)")
        }
    }

    /// Rows of table [V, D] picked by ids of any shape: [ids..., D].
    public static func embedding(_ table: Tensor, ids idTensor: Tensor) -> Tensor {
        precondition(table.rank == 2, "embedding: table must be [V, D]")
        let (v, d) = (table.shape[0], table.shape[1])
        let ids = ids(idTensor)
        for id in ids where id < 0 || id >= v { fatalError("embedding: id \(id) outside the vocabulary of \(v)") }
        let tc = f32(table), out = Tensor(uninitialized: idTensor.shape + [d])
        defer { withExtendedLifetime((tc, out)) {} }
        let tp = pointer(tc), op = pointer(out)
        ids.withUnsafeBufferPointer { ids in
            let ids = ids
            Parallel.forEach(ids.count, minimumChunk: grain(d)) { r in
                for i in r { (op + i * d).update(from: tp + ids[i] * d, count: d) }
            }
        }
        return out
    }

    /// gy [ids..., D] scattered into [vocabulary, D]; repeated ids add up, in id order (deterministic
    /// whatever the thread count: threads split the D columns).
    public static func embeddingBackward(_ gy: Tensor, ids idTensor: Tensor, vocabulary: Int) -> Tensor {
        let ids = ids(idTensor)
        let d = gy.shape.last ?? 1
        if gy.count != ids.count * d { fatalError("embeddingBackward: gradient \(gy.shape) does not match ids \(idTensor.shape)") }
        for id in ids where id < 0 || id >= vocabulary { fatalError("embedding: id \(id) outside the vocabulary of \(vocabulary)") }
        let gc = f32(gy), out = Tensor(zeros: [vocabulary, d])
        defer { withExtendedLifetime((gc, out)) {} }
        let gp = pointer(gc), op = pointer(out)
        ids.withUnsafeBufferPointer { ids in
            let ids = ids
            Parallel.forEach(d, minimumChunk: grain(ids.count, work: 1 << 20)) { cols in
                for (i, id) in ids.enumerated() {
                    let src = gp + i * d, dst = op + id * d
                    for k in cols { dst[k] += src[k] }
                }
            }
        }
        return out
    }
}

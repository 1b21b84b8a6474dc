import DGBase
import DGTensor
import Foundation

/// How far one set of values moved from another: sums in float64, whatever the stored types,
/// so that a float16 file compared with its float32 source shows its rounding and no more.
public struct ValueChange: Equatable, Sendable {
    /// Elements compared.
    public var count = 0
    /// Elements whose values differ (NaN equals NaN here: a copied NaN is not a change).
    public var differing = 0
    /// Elements where exactly one side is NaN, or both are infinite with opposite signs: they
    /// count as differing but add nothing to the norms.
    public var nonFinite = 0
    public var sumSquaresA: Double = 0
    public var sumSquaresDifference: Double = 0
    public var maxAbsDifference: Double = 0

    public init() {}

    public var normA: Double { sumSquaresA.squareRoot() }
    public var normDifference: Double { sumSquaresDifference.squareRoot() }

    /// ‖B − A‖ / ‖A‖: 0 when nothing moved; infinite when A is all zeros and B is not, or when
    /// a value became NaN or flipped between infinities.
    public var relative: Double {
        if differing == 0 { return 0 }
        if nonFinite > 0 || sumSquaresA == 0 { return .infinity }
        return normDifference / normA
    }

    public var isIdentical: Bool { differing == 0 }

    public mutating func merge(_ other: ValueChange) {
        count += other.count
        differing += other.differing
        nonFinite += other.nonFinite
        sumSquaresA += other.sumSquaresA
        sumSquaresDifference += other.sumSquaresDifference
        maxAbsDifference = max(maxAbsDifference, other.maxAbsDifference)
    }
}

/// One tensor present in both checkpoints (under the same component and diffusers name).
public struct TensorComparison: Sendable {
    /// "component/diffusers.name".
    public var name: String
    public var dtypeA: DType
    public var dtypeB: DType
    public var shapeA: [Int]
    public var shapeB: [Int]
    /// nil when the shapes differ: such tensors are reported, not compared.
    public var change: ValueChange?

    public var shapeChanged: Bool { shapeA != shapeB }
    public var dtypeChanged: Bool { dtypeA != dtypeB }
}

/// Tensors grouped by the block of the model they belong to (`unet/down_blocks.1.attentions.0`).
public struct BlockComparison: Sendable {
    public var name: String
    public var tensors: Int
    /// Tensors of the block whose shapes differ (not in `change`).
    public var shapeChanges: Int
    public var change: ValueChange
}

/// What differs between two checkpoints of the same model, by diffusers names whatever their
/// formats and layouts.
public struct CheckpointDiff: Sendable {
    public var pathA: String
    public var pathB: String
    public var layoutA: String
    public var layoutB: String
    /// "component/name" of tensors that only one side holds (whole components included).
    public var onlyInA: [String] = []
    public var onlyInB: [String] = []
    public var componentsOnlyInA: [String] = []
    public var componentsOnlyInB: [String] = []
    /// Every tensor both hold, in A's order.
    public var tensors: [TensorComparison] = []

    public var shapeChanges: [TensorComparison] { tensors.filter(\.shapeChanged) }
    public var dtypeChanges: [TensorComparison] { tensors.filter(\.dtypeChanged) }
    public var changedTensors: [TensorComparison] { tensors.filter { !($0.change?.isIdentical ?? false) } }

    /// Same names, same shapes, same values. Stored types may differ (a float16 copy of
    /// float16-representable values is the same weights); `dtypeChanges` says so.
    public var isIdentical: Bool {
        onlyInA.isEmpty && onlyInB.isEmpty && tensors.allSatisfy { $0.change?.isIdentical ?? false }
    }

    public var total: ValueChange {
        var t = ValueChange()
        for c in tensors { if let change = c.change { t.merge(change) } }
        return t
    }

    /// Per block, the largest relative change first (then by name).
    public func blocks() -> [BlockComparison] {
        var order: [String] = []
        var byName: [String: BlockComparison] = [:]
        for t in tensors {
            let block = Self.blockName(of: t.name)
            if byName[block] == nil {
                order.append(block)
                byName[block] = BlockComparison(name: block, tensors: 0, shapeChanges: 0, change: ValueChange())
            }
            byName[block]!.tensors += 1
            if let change = t.change { byName[block]!.change.merge(change) } else { byName[block]!.shapeChanges += 1 }
        }
        return Self.sorted(order.map { byName[$0]! }, name: \.name, change: { $0.change }, unchanged: { $0.shapeChanges == 0 })
    }

    /// Per tensor, the largest relative change first; tensors of other shapes first of all.
    public func tensorsByChange() -> [TensorComparison] {
        Self.sorted(tensors, name: \.name, change: { $0.change ?? ValueChange() }, unchanged: { $0.change != nil })
    }

    private static func sorted<T>(_ items: [T], name: (T) -> String, change: (T) -> ValueChange, unchanged: (T) -> Bool) -> [T] {
        items.enumerated().sorted { x, y in
            let (a, b) = (x.element, y.element)
            if unchanged(a) != unchanged(b) { return !unchanged(a) }
            let (ra, rb) = (change(a).relative, change(b).relative)
            if ra != rb { return ra > rb }
            let (ma, mb) = (change(a).maxAbsDifference, change(b).maxAbsDifference)
            if ma != mb { return ma > mb }
            return x.offset < y.offset
        }.map(\.element)
    }

    /// The block a parameter belongs to: its module path (the name without the parameter) cut
    /// after the item of the first numbered list (`mid_block.attentions.0`,
    /// `text_model.encoder.layers.3`), or of the list inside it for diffusers' `down_blocks` /
    /// `up_blocks`, whose items are lists of resnets and attentions (`down_blocks.1.attentions.0`);
    /// with no number, its first two parts (`conv_in`, `time_embedding.linear_1`,
    /// `text_model.embeddings`). The component prefix stays.
    public static func blockName(of name: String) -> String {
        var prefix = ""
        var rest = Substring(name)
        if let slash = name.firstIndex(of: "/") {
            prefix = String(name[...slash])
            rest = name[name.index(after: slash)...]
        }
        var parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count > 1 { parts.removeLast() }
        let numbered = parts.indices.filter { !parts[$0].isEmpty && parts[$0].allSatisfy(\.isNumber) }
        let end: Int
        if let first = numbered.first {
            let nested = first > 0 && (parts[first - 1].hasSuffix("down_blocks") || parts[first - 1].hasSuffix("up_blocks"))
            end = (nested && numbered.count >= 2 ? numbered[1] : first) + 1
        } else {
            end = min(2, parts.count)
        }
        return prefix + parts[..<end].joined(separator: ".")
    }
}

extension Checkpoint {
    /// Compares `b` with `a` tensor by tensor, one pair in memory at a time (memory-mapped where
    /// the formats allow), so peak memory stays near the largest tensor.
    public static func diff(_ a: Checkpoint, _ b: Checkpoint, component only: String? = nil,
                            progress showProgress: Bool = false) throws -> CheckpointDiff {
        var result = CheckpointDiff(pathA: a.path, pathB: b.path, layoutA: a.layout.rawValue, layoutB: b.layout.rawValue)
        func selected(_ ck: Checkpoint) throws -> [Component] {
            guard let only else { return ck.components }
            guard let c = ck.component(only) else {
                throw FileError(ck.path, "has no component \(only) (it holds \(ck.components.map(\.name).joined(separator: ", ")))")
            }
            return [c]
        }
        let componentsA = try selected(a), componentsB = try selected(b)
        var pairs: [(Component, Component)] = []
        for ca in componentsA {
            if let cb = componentsB.first(where: { $0.name == ca.name }) {
                pairs.append((ca, cb))
            } else {
                result.componentsOnlyInA.append(ca.name)
                result.onlyInA += ca.source.entries.map { ca.name + "/" + $0.name }
            }
        }
        for cb in componentsB where !componentsA.contains(where: { $0.name == cb.name }) {
            result.componentsOnlyInB.append(cb.name)
            result.onlyInB += cb.source.entries.map { cb.name + "/" + $0.name }
        }

        var work: [(Component, Component, TensorEntry, TensorEntry)] = []
        for (ca, cb) in pairs {
            var entriesB: [String: TensorEntry] = [:]
            for e in cb.source.entries { entriesB[e.name] = e }
            let namesA = Set(ca.source.entries.map(\.name))
            for ea in ca.source.entries {
                if let eb = entriesB[ea.name] { work.append((ca, cb, ea, eb)) } else { result.onlyInA.append(ca.name + "/" + ea.name) }
            }
            result.onlyInB += cb.source.entries.filter { !namesA.contains($0.name) }.map { cb.name + "/" + $0.name }
        }

        let totalBytes = work.reduce(0) { $0 + $1.2.byteCount + $1.3.byteCount }
        let progress = ProgressBar("diff", total: Double(totalBytes), unit: "B", enabled: showProgress)
        defer { progress.finish() }
        // Each tensor is read once: keeping freed buffers for reuse would only raise the peak.
        let pooled = BlockPool.shared.capacity
        BlockPool.shared.capacity = 0
        defer { BlockPool.shared.capacity = pooled }
        for (ca, cb, ea, eb) in work {
            var comparison = TensorComparison(name: ca.name + "/" + ea.name, dtypeA: ea.dtype, dtypeB: eb.dtype,
                                              shapeA: ea.shape, shapeB: eb.shape, change: nil)
            if ea.shape == eb.shape {
                let ta = try ca.source.tensor(ea.name).contiguous()
                let tb = try cb.source.tensor(eb.name).contiguous()
                guard ta.count == ea.count, tb.count == eb.count else {
                    throw FileError(ta.count == ea.count ? cb.source.path : ca.source.path,
                                    "tensor \(ea.name) is read as \(ta.count == ea.count ? tb.shape : ta.shape), not its declared \(ea.shape)")
                }
                comparison.change = ta.withRawBytes { ra in tb.withRawBytes { rb in compareValues(ra, ta.dtype, rb, tb.dtype, count: ea.count) } }
            }
            ca.source.release(ea.name)
            cb.source.release(eb.name)
            result.tensors.append(comparison)
            progress.advance(by: Double(ea.byteCount + eb.byteCount))
        }
        return result
    }

    /// Decodes both sides in chunks of float64 and accumulates the change: no whole-tensor copy.
    static func compareValues(_ a: UnsafeRawBufferPointer, _ dtypeA: DType, _ b: UnsafeRawBufferPointer, _ dtypeB: DType,
                              count: Int) -> ValueChange {
        var change = ValueChange()
        change.count = count
        let chunk = 16384
        var bufferA = [Double](repeating: 0, count: min(chunk, max(count, 1)))
        var bufferB = bufferA
        var start = 0
        while start < count {
            let n = min(chunk, count - start)
            bufferA.withUnsafeMutableBufferPointer { decode(a, dtypeA, from: start, count: n, into: $0.baseAddress!) }
            bufferB.withUnsafeMutableBufferPointer { decode(b, dtypeB, from: start, count: n, into: $0.baseAddress!) }
            for i in 0..<n {
                let x = bufferA[i], y = bufferB[i]
                if x.isFinite { change.sumSquaresA += x * x } else if x.isInfinite { change.sumSquaresA = .infinity }
                if x == y || (x.isNaN && y.isNaN) { continue }
                change.differing += 1
                let d = abs(y - x)
                if d.isNaN || (x.isInfinite && y.isInfinite) {
                    change.nonFinite += 1
                    continue
                }
                change.sumSquaresDifference += d * d
                if d > change.maxAbsDifference { change.maxAbsDifference = d }
            }
            start += n
        }
        return change
    }

    /// Every float16 as float64: a lookup is several times faster than converting each element,
    /// and SD files are mostly float16.
    static let halfTable: [Double] = (0...0xFFFF).map { Double(floatFromFloat16Bits(UInt16($0))) }

    /// Elements [from, from + count) of a little-endian buffer of `dtype`, as float64 (exact for
    /// every float type and for integers below 2^53).
    static func decode(_ raw: UnsafeRawBufferPointer, _ dtype: DType, from: Int, count: Int, into out: UnsafeMutablePointer<Double>) {
        let size = dtype.byteSize
        let base = raw.baseAddress! + from * size
        func each<T>(_ type: T.Type, _ convert: (T) -> Double) {
            for i in 0..<count { out[i] = convert(base.loadUnaligned(fromByteOffset: i * size, as: T.self)) }
        }
        switch dtype {
        case .f64: each(UInt64.self) { Double(bitPattern: UInt64(littleEndian: $0)) }
        case .f32: each(UInt32.self) { Double(Float(bitPattern: UInt32(littleEndian: $0))) }
        case .f16: halfTable.withUnsafeBufferPointer { table in each(UInt16.self) { table[Int(UInt16(littleEndian: $0))] } }
        case .bf16: each(UInt16.self) { Double(floatFromBFloat16Bits(UInt16(littleEndian: $0))) }
        case .i64: each(Int64.self) { Double(Int64(littleEndian: $0)) }
        case .i32: each(Int32.self) { Double(Int32(littleEndian: $0)) }
        case .i16: each(Int16.self) { Double(Int16(littleEndian: $0)) }
        case .i8: each(Int8.self) { Double($0) }
        case .u64: each(UInt64.self) { Double(UInt64(littleEndian: $0)) }
        case .u32: each(UInt32.self) { Double(UInt32(littleEndian: $0)) }
        case .u16: each(UInt16.self) { Double(UInt16(littleEndian: $0)) }
        case .u8: each(UInt8.self) { Double($0) }
        case .bool: each(UInt8.self) { $0 == 0 ? 0 : 1 }
        // float8 as the OCP formats define them: E5M2 is the top byte of a float16; E4M3 (the
        // "fn" variant) has bias 7, no infinities, and NaN at all-ones.
        case .f8e5m2: each(UInt8.self) { Double(floatFromFloat16Bits(UInt16($0) << 8)) }
        case .f8e4m3: each(UInt8.self) { byte in
            let sign: Double = byte & 0x80 != 0 ? -1 : 1
            let exponent = Int((byte >> 3) & 0xF), mantissa = Double(byte & 0x7)
            if exponent == 15 && byte & 0x7 == 7 { return .nan }
            if exponent == 0 { return sign * mantissa / 8 * 0x1p-6 }
            return sign * (1 + mantissa / 8) * Double(sign: .plus, exponent: exponent - 7, significand: 1)
        }
        }
    }
}

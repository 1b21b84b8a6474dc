import DGTensor

/// What every checkpoint reader offers: the tensors' descriptions up front (from the header,
/// nothing read yet), then each tensor's data on demand. Converting streams through this.
public struct TensorEntry: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * dtype.byteSize }
}

public protocol TensorSource: AnyObject {
    /// Where the tensors come from, for error messages.
    var path: String { get }
    /// In storage order (reading in this order is sequential on disk).
    var entries: [TensorEntry] { get }
    /// The tensor, a zero-copy view of a memory-mapped file where dtype and alignment allow.
    func tensor(_ name: String) throws -> Tensor
    /// Tells the source its data for `name` is consumed (lets a streaming converter drop pages).
    func release(_ name: String)
}

extension TensorSource {
    public func entry(_ name: String) -> TensorEntry? { entries.first { $0.name == name } }
    public func release(_ name: String) {}
}

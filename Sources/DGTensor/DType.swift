/// Element types a tensor may be stored in. Compute is float32, except the products with bf16
/// weights where the CPU runs them faster in bf16 (`GEMM.bf16`); the others are storage (weights in
/// f16/bf16) or integer data (token ids, labels).
public enum DType: String, CaseIterable, Sendable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
    // Recognised so that such files are described correctly; we never compute in them.
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    /// The safetensors spelling of this dtype.
    public var name: String { rawValue }

    public init?(name: String) { self.init(rawValue: name) }

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16, .f8e4m3, .f8e5m2: return true
        default: return false
        }
    }

    /// Types that `Tensor.converted(to:)` can read and write.
    public var isConvertible: Bool {
        switch self {
        case .f8e4m3, .f8e5m2: return false
        default: return true
        }
    }
}

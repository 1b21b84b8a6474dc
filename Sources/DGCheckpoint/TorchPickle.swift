import DGBase
import DGTensor

/// A pickle machine (protocols 0-5) that executes nothing. It knows what each allowed global
/// means and rebuilds that meaning itself: a dict, a tensor view of a storage, a device name.
/// Every other global is refused by name the moment the pickle names it (before anything could
/// call it), except the inert placeholders of `TorchPickle.placeholder`, which are never called,
/// and which are refused as soon as a tensor or storage is handed to them, so that no weight
/// can lie behind one. docs/PICKLE.md states the rule.
///
/// Containers live in arenas indexed by the values, not in nested enums or class trees: a
/// hostile pickle nesting a million tuples or building cycles then costs no recursion (a
/// recursive enum's deinit would overflow the stack) and no leak. Everything allocated is
/// bounded by the pickle's length, since each opcode adds at most one value, one memo slot or
/// moves values already counted; lengths read from the pickle are checked against what is left.
struct TorchPickle {
    enum Value {
        case none
        case bool(Bool)
        case int(Int)
        /// An integer over 64 bits (never needed by a weights file; kept opaque).
        case bigInt
        case float(Double)
        case string(String)
        case bytes([UInt8])
        case tuple(Int)
        case list(Int)
        case dict(Int)
        case set(Int)
        /// A reference to an allowed global (a class or function), by index into `globals`.
        case global(Int)
        case storage(Int)
        case tensor(Int)
        /// What an inert placeholder global "returned": opaque, by index into `globals`.
        case placeholder(Int)
    }

    /// A storage as the pickle's persistent id describes it.
    struct StorageRecord {
        var key: String
        var dtype: DType
        var numel: Int
    }

    /// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
    struct TensorRecord {
        var storage: Int
        var offset: Int
        var shape: [Int]
        var strides: [Int]
    }

    /// The meaning of an allowed global.
    enum Known: Equatable {
        case orderedDict, set, frozenset, codecsEncode
        case rebuildTensor, rebuildTensorV2, rebuildParameter, rebuildParameterWithState, rebuildFromTypeV2
        case tensorType, device, size, torchDType
        case storageType(DType)
        /// Not on the allow-list; never called; may not take tensors (see docs/PICKLE.md).
        case placeholder
    }

    // MARK: the allow-list

    /// torch's `weights_only=True` unpickler accepts these (among others we do not need): the
    /// globals on the path from a checkpoint's top-level dict to a tensor.
    static func known(_ module: String, _ name: String) -> Known? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("builtins", "set"), ("__builtin__", "set"): return .set
        case ("builtins", "frozenset"), ("__builtin__", "frozenset"): return .frozenset
        case ("_codecs", "encode"): return .codecsEncode
        case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
        case ("torch._tensor", "_rebuild_from_type_v2"): return .rebuildFromTypeV2
        case ("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.nn.parameter", "Parameter"): return .tensorType
        case ("torch", "device"): return .device
        case ("torch", "Size"): return .size
        default: break
        }
        if module == "torch" || module == "torch.storage" {
            if let dtype = storageTypes[name] { return .storageType(dtype) }
            if dtypeNames.contains(name) { return .torchDType }
        }
        if isPlaceholder(module, name) { return .placeholder }
        return nil
    }

    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool, "UntypedStorage": .u8,
    ]

    static let dtypeNames: Set<String> = [
        "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long",
        "int32", "int", "int16", "short", "int8", "uint8", "bool",
    ]

    /// Globals training checkpoints pickle beside the weights (Lightning's callbacks and
    /// hyper-parameters, numpy scalars in their state, argparse / OmegaConf configs). They are
    /// never called: REDUCE, NEWOBJ and BUILD on them give an opaque placeholder. Accepted only
    /// from these modules, never from one that can run code, and never holding a tensor.
    static func isPlaceholder(_ module: String, _ name: String) -> Bool {
        let prefixes = ["pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf."]
        if prefixes.contains(where: module.hasPrefix) || ["pytorch_lightning", "lightning", "omegaconf"].contains(module) { return true }
        switch (module, name) {
        case ("argparse", "Namespace"), ("collections", "defaultdict"),
             ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
             ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"),
             ("numpy", "dtype"), ("numpy", "ndarray"),
             ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
             ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"):
            return true
        default:
            return module.hasPrefix("numpy.dtypes") && name.hasSuffix("DType")
        }
    }

    // MARK: state

    let path: String
    private let data: UnsafeRawBufferPointer
    private var pos = 0
    private var stack: [Value] = []
    private var marks: [Int] = []
    private var memo: [Int: Value] = [:]

    private(set) var tuples: [[Value]] = []
    private(set) var lists: [[Value]] = []
    private(set) var dicts: [[(key: Value, value: Value)]] = []
    private(set) var globals: [(module: String, name: String, known: Known)] = []
    private(set) var storages: [StorageRecord] = []
    private(set) var tensors: [TensorRecord] = []
    private var storageByKey: [String: Int] = [:]
    /// Bytes of all storages seen, all within the file: the bound for a tensor read contiguous.
    private var storageBytes = 0
    /// Values copied or visited beyond what the opcodes themselves push (OrderedDict(list),
    /// set(list), the placeholder check): a pickle can ask for the same large list many times, so
    /// this is bounded by the pickle's length, or a small hostile file could cost hours or gigabytes.
    private var work = 0
    /// The placeholder globals the pickle used, in first-use order (for the warning).
    private(set) var placeholders: [String] = []

    /// Resolves `('storage', type, key, location, numel)`: checks the key against the archive
    /// and returns the storage's index. Given by the archive reader.
    private let storageSize: (String) throws -> Int?

    init(path: String, data: UnsafeRawBufferPointer, storageSize: @escaping (String) throws -> Int?) {
        self.path = path
        self.data = data
        self.storageSize = storageSize
    }

    func fail(_ problem: String) -> FileError { FileError(path, "pickle: " + problem) }

    // MARK: reading

    private mutating func byte() throws -> UInt8 {
        guard pos < data.count else { throw fail("truncated (ends inside an opcode at byte \(pos))") }
        defer { pos += 1 }
        return data[pos]
    }

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= data.count - pos else {
            throw fail("truncated: \(n) bytes wanted at byte \(pos), \(data.count - pos) left")
        }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: data[pos..<(pos + n)])
    }

    private mutating func uint(_ n: Int) throws -> UInt64 {
        let b = try take(n)
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(b[i]) }
        return v
    }

    /// A length from the pickle, refused before anything is allocated if more than is left.
    private mutating func length(_ n: Int) throws -> Int {
        let v = try uint(n)
        guard v <= UInt64(data.count - pos) else {
            throw fail("a length of \(v) bytes at byte \(pos - n) exceeds the \(data.count - pos) bytes left (truncated or corrupt)")
        }
        return Int(v)
    }

    private mutating func line() throws -> String {
        guard let end = data[pos...].firstIndex(of: 0x0A) else { throw fail("truncated (no end of line after byte \(pos))") }
        defer { pos = end + 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: data[pos..<end]), as: UTF8.self)
    }

    private mutating func utf8(_ n: Int) throws -> String {
        let b = try take(n)
        guard let s = String(validating: b.bindMemory(to: UInt8.self), as: UTF8.self) else { throw fail("a string at byte \(pos - n) is not UTF-8") }
        return s
    }

    private mutating func pop() throws -> Value {
        guard let v = stack.popLast() else { throw fail("stack underflow at byte \(pos - 1) (corrupt pickle)") }
        if let m = marks.last, m > stack.count { throw fail("an opcode at byte \(pos - 1) reaches below its MARK") }
        return v
    }

    private func top() throws -> Value {
        guard let v = stack.last, (marks.last ?? 0) < stack.count else { throw fail("stack underflow at byte \(pos - 1) (corrupt pickle)") }
        return v
    }

    private mutating func popMark() throws -> [Value] {
        guard let m = marks.popLast() else { throw fail("no MARK for the opcode at byte \(pos - 1)") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    private mutating func push(_ v: Value) { stack.append(v) }

    private func memoGet(_ i: Int) throws -> Value {
        guard let v = memo[i] else { throw fail("memo index \(i) at byte \(pos) was never stored") }
        return v
    }

    private mutating func spend(_ n: Int) throws {
        work += n
        guard work <= 4 * data.count + 100_000 else {
            throw fail("asks for more copying than a pickle of \(data.count) bytes can need (hostile or corrupt)")
        }
    }

    private mutating func tuple(_ items: [Value]) -> Value { tuples.append(items); return .tuple(tuples.count - 1) }
    private mutating func newList(_ items: [Value] = []) -> Value { lists.append(items); return .list(lists.count - 1) }
    private mutating func newDict(_ pairs: [(key: Value, value: Value)] = []) -> Value { dicts.append(pairs); return .dict(dicts.count - 1) }

    // MARK: the machine

    /// Runs the pickle to its STOP and returns the value it built.
    mutating func load() throws -> Value {
        while true {
            let op = try byte()
            switch op {
            case 0x80: // PROTO
                let v = try byte()
                guard v <= 5 else { throw fail("protocol \(v) is newer than the 5 this reader knows") }
            case 0x95: _ = try uint(8) // FRAME: a size hint only
            case 0x2E: // STOP
                let v = try pop()
                return v
            case 0x28: marks.append(stack.count) // MARK
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: push(try top()) // DUP

            case 0x4E: push(.none)
            case 0x88: push(.bool(true))
            case 0x89: push(.bool(false))
            case 0x4A: push(.int(Int(Int32(bitPattern: UInt32(try uint(4)))))) // BININT
            case 0x4B: push(.int(Int(try byte()))) // BININT1
            case 0x4D: push(.int(Int(try uint(2)))) // BININT2
            case 0x8A: push(try long(Int(try byte()))) // LONG1
            case 0x8B: push(try long(try length(4))) // LONG4
            case 0x49: // INT (text): also True / False in protocol 0
                let s = try line()
                if s == "01" { push(.bool(true)) } else if s == "00" { push(.bool(false)) } else {
                    guard let v = Int(s) else { throw fail("bad INT \(s.prefix(40))") }
                    push(.int(v))
                }
            case 0x4C: // LONG (text)
                var s = try line()
                if s.hasSuffix("L") { s.removeLast() }
                push(Int(s).map { .int($0) } ?? .bigInt)
            case 0x47: push(.float(Double(bitPattern: try uint(8).byteSwapped))) // BINFLOAT, big-endian
            case 0x46: // FLOAT (text)
                let s = try line()
                guard let v = Double(s) else { throw fail("bad FLOAT \(s.prefix(40))") }
                push(.float(v))

            case 0x58: push(.string(try utf8(try length(4)))) // BINUNICODE
            case 0x8C: push(.string(try utf8(Int(try byte())))) // SHORT_BINUNICODE
            case 0x8D: push(.string(try utf8(try length(8)))) // BINUNICODE8
            case 0x56: push(.string(try line())) // UNICODE (raw-unicode-escape; ASCII is what matters)
            case 0x54: push(.string(String(decoding: try take(try length(4)), as: UTF8.self))) // BINSTRING
            case 0x55: push(.string(String(decoding: try take(Int(try byte())), as: UTF8.self))) // SHORT_BINSTRING
            case 0x53: // STRING (text, quoted)
                var s = try line()
                if s.count >= 2, let f = s.first, f == "'" || f == "\"", s.last == f { s = String(s.dropFirst().dropLast()) }
                push(.string(s))
            case 0x42: push(.bytes(Array(try take(try length(4))))) // BINBYTES
            case 0x43: push(.bytes(Array(try take(Int(try byte()))))) // SHORT_BINBYTES
            case 0x8E, 0x96: push(.bytes(Array(try take(try length(8))))) // BINBYTES8, BYTEARRAY8

            case 0x29: push(tuple([])) // EMPTY_TUPLE
            case 0x74: push(tuple(try popMark())) // TUPLE
            case 0x85: let a = try pop(); push(tuple([a])) // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); push(tuple([a, b])) // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); push(tuple([a, b, c])) // TUPLE3
            case 0x5D: push(newList()) // EMPTY_LIST
            case 0x6C: push(newList(try popMark())) // LIST
            case 0x61: let v = try pop(); try append(to: try top(), [v]) // APPEND
            case 0x65: let items = try popMark(); try append(to: try top(), items) // APPENDS
            case 0x7D: push(newDict()) // EMPTY_DICT
            case 0x64: // DICT
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("DICT with an odd number of items") }
                push(newDict(stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) }))
            case 0x73: let v = try pop(), k = try pop(); try setItems(on: try top(), [k, v]) // SETITEM
            case 0x75: let items = try popMark(); try setItems(on: try top(), items) // SETITEMS
            case 0x8F: lists.append([]); push(.set(lists.count - 1)) // EMPTY_SET
            case 0x90: let items = try popMark(); try append(to: try top(), items) // ADDITEMS
            case 0x91: lists.append(try popMark()); push(.set(lists.count - 1)) // FROZENSET

            case 0x70: guard let i = Int(try line()) else { throw fail("bad PUT index") }; memo[i] = try top() // PUT
            case 0x71: memo[Int(try byte())] = try top() // BINPUT
            case 0x72: memo[Int(try uint(4))] = try top() // LONG_BINPUT
            case 0x94: memo[memo.count] = try top() // MEMOIZE
            case 0x67: guard let i = Int(try line()) else { throw fail("bad GET index") }; push(try memoGet(i)) // GET
            case 0x68: push(try memoGet(Int(try byte()))) // BINGET
            case 0x6A: push(try memoGet(Int(try uint(4)))) // LONG_BINGET

            case 0x63: // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                push(try global(module, name))
            case 0x93: // STACK_GLOBAL
                let n = try pop(), m = try pop()
                guard case .string(let name) = n, case .string(let module) = m else { throw fail("STACK_GLOBAL needs two strings") }
                push(try global(module, name))
            case 0x52: // REDUCE
                let args = try pop(), f = try pop()
                push(try reduce(f, args))
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                push(try reduce(cls, args))
            case 0x92: // NEWOBJ_EX
                let kwargs = try pop(), args = try pop(), cls = try pop()
                try refuseTensors(in: kwargs, given: cls)
                push(try reduce(cls, args))
            case 0x62: // BUILD
                let state = try pop()
                try build(try top(), state)
            case 0x69: // INST "module\nname\n", arguments from MARK
                let module = try line(), name = try line()
                let cls = try global(module, name)
                let args = tuple(try popMark())
                push(try reduce(cls, args))
            case 0x6F: // OBJ: class and arguments from MARK
                let items = try popMark()
                guard let cls = items.first else { throw fail("OBJ without a class") }
                push(try reduce(cls, tuple(Array(items.dropFirst()))))
            case 0x51: push(try persistentLoad(try pop())) // BINPERSID
            case 0x50: throw fail("text persistent ids (PERSID) are not used by torch.save; refused")
            case 0x82, 0x83, 0x84: throw fail("extension registry opcodes (EXT1/2/4) are refused: they name globals indirectly")
            case 0x97, 0x98: throw fail("out-of-band buffers (protocol 5 NEXT_BUFFER) are not used by torch.save; refused")
            default:
                throw fail("unknown opcode 0x\(String(op, radix: 16)) at byte \(pos - 1) (corrupt, or not a pickle)")
            }
        }
    }

    /// A little-endian two's-complement integer of `n` bytes (LONG1 / LONG4).
    private mutating func long(_ n: Int) throws -> Value {
        let b = try take(n)
        guard n <= 8 else { return .bigInt }
        guard n > 0 else { return .int(0) }
        var v: UInt64 = b[n - 1] & 0x80 != 0 ? ~0 : 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(b[i]) }
        return .int(Int(bitPattern: UInt(v)))
    }

    // MARK: globals and their meaning

    private mutating func global(_ module: String, _ name: String) throws -> Value {
        let full = module + "." + name
        guard let k = Self.known(module, name) else {
            throw fail("refused global \(Self.printable(full)): not on the weights allow-list (it could run code); nothing was run")
        }
        if k == .placeholder, !placeholders.contains(full) { placeholders.append(full) }
        globals.append((module, name, k))
        return .global(globals.count - 1)
    }

    static func printable(_ s: String) -> String {
        let cut = s.count > 120 ? String(s.prefix(120)) + "..." : s
        return String(cut.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
    }

    private func name(_ g: Int) -> String { globals[g].module + "." + globals[g].name }

    private func args(_ v: Value, _ what: String) throws -> [Value] {
        guard case .tuple(let t) = v else { throw fail("\(what) called with arguments that are not a tuple") }
        return tuples[t]
    }

    private func int(_ v: Value, _ what: String) throws -> Int {
        guard case .int(let i) = v else { throw fail("\(what) is not an integer") }
        return i
    }

    private func ints(_ v: Value, _ what: String) throws -> [Int] {
        guard case .tuple(let t) = v else { throw fail("\(what) is not a tuple of integers") }
        return try tuples[t].map { try int($0, what) }
    }

    private mutating func reduce(_ f: Value, _ argv: Value) throws -> Value {
        guard case .global(let g) = f else {
            if case .placeholder(let p) = f {
                try refuseTensors(in: argv, given: f)
                return .placeholder(p)
            }
            throw fail("REDUCE on something that is not an allowed global")
        }
        let what = name(g)
        switch globals[g].known {
        case .placeholder:
            try refuseTensors(in: argv, given: f)
            return .placeholder(g)
        case .orderedDict:
            let a = try args(argv, what)
            guard let first = a.first else { return newDict() }
            // OrderedDict([(k, v), ...])
            guard case .list(let l) = first else { throw fail("\(what) with arguments it does not take") }
            try spend(lists[l].count)
            var pairs: [(key: Value, value: Value)] = []
            for item in lists[l] {
                guard case .tuple(let t) = item, tuples[t].count == 2 else { throw fail("\(what) item is not a pair") }
                pairs.append((tuples[t][0], tuples[t][1]))
            }
            return newDict(pairs)
        case .set, .frozenset:
            let a = try args(argv, what)
            guard let first = a.first else { lists.append([]); return .set(lists.count - 1) }
            guard case .list(let l) = first else { throw fail("\(what) with arguments it does not take") }
            try spend(lists[l].count)
            lists.append(lists[l])
            return .set(lists.count - 1)
        case .codecsEncode:
            // Protocol 2 pickles bytes as _codecs.encode(text, "latin1").
            let a = try args(argv, what)
            guard a.count == 2, case .string(let s) = a[0], case .string(let enc) = a[1], enc == "latin1" || enc == "latin-1" else {
                throw fail("\(what) with arguments it does not take")
            }
            return .bytes(s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) })
        case .rebuildTensor, .rebuildTensorV2:
            let a = try args(argv, what)
            guard a.count >= 4 else { throw fail("\(what) needs (storage, offset, size, stride, ...)") }
            guard case .storage(let s) = a[0] else { throw fail("\(what) given something that is not a storage") }
            return try tensor(storage: s, offset: try int(a[1], "storage offset"),
                              shape: try ints(a[2], "tensor size"), strides: try ints(a[3], "tensor stride"))
        case .rebuildParameter, .rebuildParameterWithState:
            let a = try args(argv, what)
            guard let data = a.first, case .tensor = data else { throw fail("\(what) given something that is not a tensor") }
            return data
        case .rebuildFromTypeV2:
            // (func, new_type, args, state): a tensor (or Parameter) rebuilt by func(*args).
            let a = try args(argv, what)
            guard a.count == 4, case .global(let t) = a[1], globals[t].known == .tensorType else {
                throw fail("\(what) with a type other than torch.Tensor / Parameter")
            }
            // Only a tensor rebuild may be applied: nesting this function in itself would recurse
            // as deep as a hostile file likes.
            guard case .global(let f) = a[0], [.rebuildTensor, .rebuildTensorV2, .rebuildParameter, .rebuildParameterWithState].contains(globals[f].known) else {
                throw fail("\(what) applied to something other than a tensor rebuild")
            }
            return try reduce(a[0], a[2])
        case .device:
            let a = try args(argv, what)
            guard let first = a.first, case .string = first else { throw fail("\(what) without a device name") }
            return first
        case .size:
            let a = try args(argv, what)
            guard a.count == 1, case .tuple = a[0] else { throw fail("\(what) without a tuple") }
            return a[0]
        case .tensorType, .torchDType, .storageType:
            throw fail("refused to call \(Self.printable(what)): a weights file never calls it")
        }
    }

    private mutating func build(_ target: Value, _ state: Value) throws {
        switch target {
        case .placeholder, .global:
            if case .global(let g) = target, globals[g].known != .placeholder {
                throw fail("refused BUILD on \(Self.printable(name(g)))")
            }
            try refuseTensors(in: state, given: target)
        case .dict, .tensor:
            // An OrderedDict's attributes (a state dict's `_metadata` of module versions) and a
            // tensor's Python attributes carry no weight: dropped.
            break
        default:
            throw fail("BUILD on a value that takes no state")
        }
    }

    private mutating func append(to target: Value, _ items: [Value]) throws {
        switch target {
        case .list(let l), .set(let l): lists[l] += items
        case .placeholder: for v in items { try refuseTensors(in: v, given: target) }
        default: throw fail("APPEND to a value that is not a list")
        }
    }

    private mutating func setItems(on target: Value, _ items: [Value]) throws {
        guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items") }
        switch target {
        case .dict(let d):
            for i in stride(from: 0, to: items.count, by: 2) { dicts[d].append((items[i], items[i + 1])) }
        case .placeholder: for v in items { try refuseTensors(in: v, given: target) }
        default: throw fail("SETITEM on a value that is not a dict")
        }
    }

    /// The placeholder rule's other side: no tensor or storage may reach an object we do not
    /// rebuild, or weights could hide behind it (and its "state" would be dropped silently).
    private mutating func refuseTensors(in v: Value, given owner: Value) throws {
        var pending = [v]
        var seenTuples = Set<Int>(), seenLists = Set<Int>(), seenDicts = Set<Int>()
        while let x = pending.popLast() {
            try spend(1)
            switch x {
            case .tensor, .storage:
                var who = "an object"
                if case .placeholder(let g) = owner { who = name(g) } else if case .global(let g) = owner { who = name(g) }
                throw fail("refused: a tensor is handed to \(Self.printable(who)), which is not on the weights allow-list (only plain containers may hold tensors)")
            case .tuple(let t): if seenTuples.insert(t).inserted { pending += tuples[t] }
            case .list(let l), .set(let l): if seenLists.insert(l).inserted { pending += lists[l] }
            case .dict(let d): if seenDicts.insert(d).inserted { for p in dicts[d] { pending.append(p.key); pending.append(p.value) } }
            default: break
            }
        }
    }

    // MARK: storages and tensors

    private mutating func persistentLoad(_ pid: Value) throws -> Value {
        guard case .tuple(let t) = pid, tuples[t].count == 5, case .string("storage") = tuples[t][0] else {
            throw fail("a persistent id that is not ('storage', type, key, location, numel)")
        }
        let items = tuples[t]
        guard case .global(let g) = items[1], case .storageType(let dtype) = globals[g].known else {
            throw fail("persistent id names no torch storage type")
        }
        guard case .string(let key) = items[2] else { throw fail("storage key is not a string") }
        let numel = try int(items[4], "storage numel")
        if let i = storageByKey[key] {
            guard storages[i].dtype == dtype else { throw fail("storage \(key) is read as two dtypes") }
            return .storage(i)
        }
        guard let bytes = try storageSize(key) else { throw fail("storage \(Self.printable(key)) is missing from the archive (data/\(Self.printable(key)))") }
        let (need, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
        guard numel >= 0, !overflow, need <= bytes else {
            throw fail("storage \(Self.printable(key)) should hold \(numel) \(dtype.name) elements but the archive has \(bytes) bytes for it")
        }
        storages.append(StorageRecord(key: key, dtype: dtype, numel: numel))
        storageBytes += need
        storageByKey[key] = storages.count - 1
        return .storage(storages.count - 1)
    }

    private mutating func tensor(storage s: Int, offset: Int, shape: [Int], strides: [Int]) throws -> Value {
        guard shape.count == strides.count else { throw fail("tensor size \(shape) and stride \(strides) differ in rank") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw fail("tensor with a negative size, stride or offset (size \(shape), stride \(strides), offset \(offset))")
        }
        let numel = storages[s].numel
        // The last element the view touches must lie in the storage; computed with overflow
        // checks so that absurd sizes are refused rather than wrapped.
        var count = 1, last = offset
        for (n, st) in zip(shape, strides) {
            let (c, o1) = count.multipliedReportingOverflow(by: n)
            guard !o1 else { throw fail("tensor of size \(shape) has too many elements (overflows 64 bits)") }
            count = c
            if n > 0 {
                let (step, o2) = (n - 1).multipliedReportingOverflow(by: st)
                let (l, o3) = last.addingReportingOverflow(step)
                guard !o2, !o3 else { throw fail("tensor of size \(shape) and stride \(strides) reaches past any storage") }
                last = l
            }
        }
        if count > 0 && last >= numel {
            throw fail("tensor view (offset \(offset), size \(shape), stride \(strides)) reaches element \(last) of storage \(Self.printable(storages[s].key)), which has \(numel)")
        }
        // A view may repeat elements (stride 0); reading it makes it contiguous, so its size is
        // bounded here by the data there is: nothing a file asks for is larger than the file.
        let (bytes, o4) = count.multipliedReportingOverflow(by: storages[s].dtype.byteSize)
        guard !o4, bytes <= storageBytes else {
            throw fail("tensor of size \(shape) is larger than the file (expanded views are not read)")
        }
        tensors.append(TensorRecord(storage: s, offset: offset, shape: shape, strides: strides))
        return .tensor(tensors.count - 1)
    }
}

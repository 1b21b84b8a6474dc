/// A config that this project cannot build a model from: a missing or mistyped value, or a
/// feature the reference supports and we do not. The description is one line naming the key.
public struct ModelConfigError: Error, CustomStringConvertible, Equatable {
    public let model: String
    public let key: String
    public let problem: String

    public init(model: String, key: String, problem: String) {
        self.model = model
        self.key = key
        self.problem = problem
    }

    public var description: String {
        key.isEmpty ? "\(model) config \(problem)" : "\(model) config: \"\(key)\" \(problem)"
    }
}

/// Reads a diffusers/transformers config with the reference defaults for absent keys, and turns
/// every surprise into a `ModelConfigError`. A key that is present must have the right type:
/// guessing around a mistyped value would build a model that silently differs from the weights.
public struct ConfigReader {
    public let json: JSON
    public let model: String

    public init(_ json: JSON, model: String) throws {
        guard json.objectPairs != nil else {
            throw ModelConfigError(model: model, key: "", problem: "is not a JSON object")
        }
        self.json = json
        self.model = model
    }

    public func error(_ key: String, _ problem: String) -> ModelConfigError {
        ModelConfigError(model: model, key: key, problem: problem)
    }

    /// The value, or nil when the key is absent or null (Python's None).
    public func present(_ key: String) -> JSON? {
        guard let v = json[key], !v.isNull else { return nil }
        return v
    }

    public func int(_ key: String, default value: Int) throws -> Int {
        guard let v = json[key] else { return value }
        guard let i = v.int else { throw error(key, "must be an integer, not \(v.compact)") }
        return i
    }

    public func positiveInt(_ key: String, default value: Int) throws -> Int {
        let i = try int(key, default: value)
        guard i > 0 else { throw error(key, "must be positive, not \(i)") }
        return i
    }

    public func optionalInt(_ key: String) throws -> Int? {
        guard let v = present(key) else { return nil }
        guard let i = v.int else { throw error(key, "must be an integer or null, not \(v.compact)") }
        return i
    }

    public func double(_ key: String, default value: Double) throws -> Double {
        guard let v = json[key] else { return value }
        guard let d = v.double else { throw error(key, "must be a number, not \(v.compact)") }
        return d
    }

    public func optionalDouble(_ key: String) throws -> Double? {
        guard let v = present(key) else { return nil }
        guard let d = v.double else { throw error(key, "must be a number or null, not \(v.compact)") }
        return d
    }

    public func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let v = json[key] else { return value }
        guard let b = v.bool else { throw error(key, "must be true or false, not \(v.compact)") }
        return b
    }

    public func string(_ key: String, default value: String) throws -> String {
        guard let v = json[key] else { return value }
        guard let s = v.string else { throw error(key, "must be a string, not \(v.compact)") }
        return s
    }

    public func optionalString(_ key: String) throws -> String? {
        guard let v = present(key) else { return nil }
        guard let s = v.string else { throw error(key, "must be a string or null, not \(v.compact)") }
        return s
    }

    public func strings(_ key: String, default value: [String]) throws -> [String] {
        guard let v = json[key] else { return value }
        guard let a = v.array, case let s = a.compactMap(\.string), s.count == a.count, !s.isEmpty else {
            throw error(key, "must be a non-empty list of strings, not \(v.compact)")
        }
        return s
    }

    public func positiveInts(_ key: String, default value: [Int]) throws -> [Int] {
        guard let v = json[key] else { return value }
        guard let a = v.array, case let i = a.compactMap(\.int), i.count == a.count, !i.isEmpty,
              i.allSatisfy({ $0 > 0 }) else {
            throw error(key, "must be a non-empty list of positive integers, not \(v.compact)")
        }
        return i
    }

    public func optionalDoubles(_ key: String) throws -> [Double]? {
        guard let v = present(key) else { return nil }
        guard let a = v.array, case let d = a.compactMap(\.double), d.count == a.count else {
            throw error(key, "must be a list of numbers or null, not \(v.compact)")
        }
        return d
    }

    /// diffusers lets many per-block settings be one value for every block or a list with one
    /// entry per block.
    public func perBlock(_ key: String, count: Int, default value: JSON) throws -> [JSON] {
        let v = json[key] ?? value
        if let a = v.array {
            guard a.count == count else {
                throw error(key, "has \(a.count) entries, but there are \(count) blocks")
            }
            return a
        }
        return Array(repeating: v, count: count)
    }

    public func perBlockPositiveInts(_ key: String, count: Int, default value: Int) throws -> [Int] {
        try perBlock(key, count: count, default: .int(value)).map { v in
            guard let i = v.int, i > 0 else {
                throw error(key, "must be a positive integer or a list of them, not \(v.compact)")
            }
            return i
        }
    }

    // MARK: refusing what we do not build

    /// The key must be absent, null, or equal to one of `allowed`.
    public func requireUnset(_ key: String, unless allowed: [JSON] = []) throws {
        guard let v = present(key), !allowed.contains(v) else { return }
        let also = allowed.isEmpty ? "" : " or " + allowed.map(\.compact).joined(separator: " or ")
        throw error(key, "= \(v.compact) is not supported (only null\(also))")
    }

    /// The key must be absent (meaning the reference default, `allowed[0]`) or one of `allowed`.
    public func require(_ key: String, in allowed: [JSON]) throws {
        guard let v = json[key], !allowed.contains(v) else { return }
        throw error(key, "= \(v.compact) is not supported (only \(allowed.map(\.compact).joined(separator: " or ")))")
    }

    /// PyTorch refuses a GroupNorm whose group count does not divide its channels.
    public func requireGroups(_ groups: Int, divide channels: [Int], key: String = "norm_num_groups") throws {
        if let c = channels.first(where: { $0 % groups != 0 }) {
            throw error(key, "= \(groups) does not divide \(c) channels")
        }
    }
}

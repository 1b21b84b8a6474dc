import DGBase
import DGTensor

/// A checkpoint split over several safetensors files, described by a `*.safetensors.index.json`
/// (`{"metadata": {...}, "weight_map": {tensor name: shard file name}}`, as transformers and
/// diffusers write it). The index and the shards must agree exactly: a tensor the index names
/// but its shard lacks, or a shard tensor the index does not name, is an error rather than a
/// silently missing or ignored weight.
public final class ShardedSafeTensors: TensorSource {
    public let path: String
    /// The index's `metadata` object as written (e.g. `total_size`), nil when absent.
    public let metadata: JSON?
    /// Opened shards, in file-name order (`-00001-of-0000N` first).
    public let shards: [SafeTensorsFile]
    /// Shard by shard, each in data-offset order.
    public let entries: [TensorEntry]
    private let shardOf: [String: Int]

    public init(indexPath: String) throws {
        path = indexPath
        func fail(_ problem: String) -> FileError { FileError(indexPath, problem) }

        let json = try Self.readIndex(indexPath)
        guard json.objectPairs != nil else { throw fail("index is not a JSON object") }
        // Other top-level keys are tolerated: they cannot change which bytes a tensor is.
        if let m = json["metadata"], m.objectPairs == nil, !m.isNull {
            throw fail("index \"metadata\" must be an object")
        }
        metadata = json["metadata"].flatMap { $0.isNull ? nil : $0 }
        guard let weightMap = json["weight_map"]?.objectPairs else {
            throw fail("index has no \"weight_map\" object")
        }

        var shardNames: [String: [String]] = [:]   // shard file -> tensor names the index puts there
        var assigned: [String: String] = [:]       // tensor name -> shard file
        assigned.reserveCapacity(weightMap.count)
        for (tensor, shard) in weightMap {
            guard let file = shard.string else {
                throw fail("weight_map entry for \(SafeTensorsHeader.quoted(tensor)) must be a shard file name")
            }
            // Shards live beside the index; a path could reach any file on disk.
            guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                throw fail("weight_map names shard \(SafeTensorsHeader.quoted(file)), which is not a plain file name")
            }
            shardNames[file, default: []].append(tensor)
            assigned[tensor] = file
        }

        let folder = indexPath.lastIndex(of: "/").map { String(indexPath[...$0]) } ?? ""
        var shards: [SafeTensorsFile] = []
        var entries: [TensorEntry] = []
        var shardOf: [String: Int] = [:]
        for file in shardNames.keys.sorted() {
            let shard = try SafeTensorsFile(path: folder + file)
            for tensor in shardNames[file] ?? [] where !shard.contains(tensor) {
                throw fail("weight_map puts \(SafeTensorsHeader.quoted(tensor)) in \(file), which does not hold it")
            }
            for entry in shard.entries {
                // A tensor in two shards is caught here too: the index can name only one of them.
                guard assigned[entry.name] == file else {
                    throw fail("\(file) holds \(SafeTensorsHeader.quoted(entry.name)), which the weight_map does not assign to it")
                }
                shardOf[entry.name] = shards.count
            }
            entries += shard.entries
            shards.append(shard)
        }
        self.shards = shards
        self.entries = entries
        self.shardOf = shardOf
    }

    private static func readIndex(_ path: String) throws -> JSON {
        let file = try mapFile(path)
        guard file.size <= SafeTensorsFile.maximumHeaderSize else {
            throw FileError(path, "index is \(file.size) bytes, more than the \(SafeTensorsFile.maximumHeaderSize) allowed")
        }
        do {
            return try JSON.parse(bytes: file.bytes)
        } catch let e as JSON.ParseError {
            throw FileError(path, "index is not valid JSON: \(e)")
        }
    }

    private func shard(_ name: String) throws -> SafeTensorsFile {
        guard let i = shardOf[name] else { throw FileError(path, "no tensor named \(SafeTensorsHeader.quoted(name))") }
        return shards[i]
    }

    public func tensor(_ name: String) throws -> Tensor { try shard(name).tensor(name) }

    /// Valid while this object lives (it holds the shards); see `SafeTensorsFile.bytes`.
    public func bytes(_ name: String) throws -> UnsafeRawBufferPointer { try shard(name).bytes(name) }

    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try shard(name).withBytes(name, body)
    }

    public func release(_ name: String) {
        if let i = shardOf[name] { shards[i].release(name) }
    }
}

/// Opens a single `.safetensors` file, or a sharded checkpoint from its `.index.json`.
public func openSafeTensors(path: String) throws -> TensorSource {
    if path.hasSuffix(".json") { return try ShardedSafeTensors(indexPath: path) }
    return try SafeTensorsFile(path: path)
}

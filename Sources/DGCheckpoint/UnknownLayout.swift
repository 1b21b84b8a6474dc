import DGBase
import DGTensor
import Foundation

/// Files whose tensors are valid but belong to no model this program knows — a LoRA, a
/// textual-inversion embedding, a checkpoint of another architecture — can still be described
/// and compared: they open as one component of raw tensor names with the layout `.unknown`.
/// Nothing converts or loads them (those paths open without `allowUnknownLayout`).
extension Checkpoint {
    /// The name of the one component an unknown-layout checkpoint holds.
    public static let unknownComponentName = "tensors"

    static let unrecognised = "holds no UNet, VAE, CLIP text encoder or ControlNet this program recognises"

    static func unknownLayout(_ source: TensorSource, reason: String) -> Checkpoint {
        let component = Component(name: unknownComponentName, className: "unknown", config: nil, source: source,
                                  metadata: (source as? SafeTensorsFile)?.metadata)
        let ck = Checkpoint(path: source.path, layout: .unknown, components: [component], files: [])
        ck.unknownLayoutReason = reason
        return ck
    }

    /// Opens any checkpoint for describing or comparing: as `open` does, but a valid tensor file
    /// that no model layout accepts (unrecognised names, or a known prefix whose tensors do not
    /// fit the SD 1.x configs, as in an SDXL file) opens as `.unknown`, with the reason. A
    /// malformed file still fails, with the reader's message.
    public static func openAny(_ path: String, options: Options = Options()) throws -> Checkpoint {
        var options = options
        options.allowUnknownLayout = true
        do {
            return try open(path, options: options)
        } catch let error as FileError {
            guard let source = try tensorFileSource(path) else { throw error }
            return unknownLayout(source, reason: error.path == path ? error.problem : error.description)
        }
    }

    /// The raw tensors of a single file as `open` reads it (safetensors, a sharded safetensors
    /// index, or a PyTorch pickle through the safe pickle machine); nil for folders and native
    /// files, whose failures are never a question of layout.
    static func tensorFileSource(_ path: String) throws -> TensorSource? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { return nil }
        if try isNative(path) { return nil }
        return try openTensorFile(path: path)
    }
}

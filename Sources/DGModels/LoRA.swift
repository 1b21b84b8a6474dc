import DGBase
import DGCheckpoint
import DGLayers
import DGTensor

// A LoRA file meets a model: its layers found by diffusers module path, merged into the weights
// (how sampling, `lora merge` and a ControlNet trained on U^P + LoRA use one) or attached as adapters.

extension LoRAFile {
    /// `component`'s adapters, each with the model layer it adapts. Fails, naming the layer, if
    /// one is missing from the model or its shapes do not fit.
    public func matched(to model: Module, component: String, path: String) throws -> [(LoRALayer, LoRAAdaptable)] {
        var byName: [String: LoRAAdaptable] = [:]
        for (name, m) in model.namedModules() {
            if let l = m as? LoRAAdaptable { byName[name] = l }
        }
        return try layers.filter { $0.component == component }.map { l in
            // transformers names CLIP's layers with or without `text_model.`.
            let stripped = l.module.hasPrefix("text_model.") ? String(l.module.dropFirst("text_model.".count)) : l.module
            guard let target = byName[l.module] ?? byName[stripped] ?? byName["text_model." + l.module] else {
                throw FileError(path, "adapts \(component) layer \(l.module), which this \(component) does not have")
            }
            guard l.weightShape == target.weight.shape else {
                throw FileError(path, "the adapter of \(component) \(l.module) makes a weight of shape \(l.weightShape); the layer's is \(target.weight.shape)")
            }
            return (l, target)
        }
    }

    /// Adds scale * (alpha/r) * B A into the weights of `component`'s layers; returns how many.
    @discardableResult
    public func merge(into model: Module, component: String, scale: Float, path: String) throws -> Int {
        let pairs = try matched(to: model, component: component, path: path)
        for (l, target) in pairs { target.mergeLowRank(down: l.down, up: l.up, scale: scale * l.scale) }
        return pairs.count
    }

    /// Merges the adapters of every component the file adapts into that model of `models` (by
    /// component name: "unet", "text_encoder"), scaled by `scale`; fails if one is absent.
    public func merge(into models: [String: Module], scale: Float, path: String) throws {
        for component in Set(layers.map(\.component)).sorted() {
            guard let model = models[component] else { throw FileError(path, "adapts a \(component), which is not given") }
            try merge(into: model, component: component, scale: scale, path: path)
        }
    }

    /// Attaches `component`'s adapters to the model's layers, with their values, scaled by `scale`.
    public func attach(to model: Module, component: String, scale: Float = 1, path: String) throws {
        for (l, target) in try matched(to: model, component: component, path: path) {
            target.attachLoRA(down: l.down.converted(to: .f32), up: l.up.converted(to: .f32), scale: scale * l.scale)
        }
    }
}

extension Module {
    /// The adapters this model carries, as a LoRA file's layers: with `alpha` if they were
    /// attached with one (scaling alpha/r), else scaling x rank.
    public func loraFileLayers(component: String, alpha: Float? = nil) -> [LoRALayer] {
        loraLayers().map { name, layer in
            let (down, up, scale) = layer.loraFactors!
            return LoRALayer(component: component, module: name, down: down.value!, up: up.value!, alpha: alpha ?? scale * Float(down.shape[0]))
        }
    }
}

/// One layer of an extraction: how much of the weight difference the kept rank holds.
public struct LoRAExtraction: Sendable {
    public var module: String
    public var rank: Int
    /// ‖ΔW‖_F of the whole difference.
    public var differenceNorm: Double
    /// Σ_{i<r} σ_i² / Σ σ_i²: the share of the difference's energy the rank-r factors keep.
    public var keptEnergy: Double
}

extension LoRAFile {
    /// A LoRA of rank `rank` from two models of one architecture (kohya's extract_lora_from_models):
    /// for each layer `targets` selects, the truncated SVD of tuned − base, ΔW ≈ U_r diag(S_r) V_rᵀ,
    /// up = U_r diag(S_r), down = V_rᵀ, alpha = rank (scaling 1). Layers whose weights did not
    /// change get no adapter. kohya also clamps the factors at their 99th-percentile magnitude;
    /// this does not, so the product is the best rank-r approximation.
    public static func extract(base: Component, tuned: Component, rank: Int, targets: LoRATargets,
                               component: String = "unet") throws -> (LoRAFile, [LoRAExtraction]) {
        // The model's structure (names and shapes only, nothing allocated) says which tensors are
        // which layers.
        guard let config = base.config else { throw FileError(base.source.path, "has no config for \(base.name); pass a diffusers folder or --config") }
        let (_, model) = try buildModel(config: config)
        let problems = compareToModel(base.source.entries, model)
        guard problems.isEmpty else { throw FileError(base.source.path, "does not fit its config: \(problems.prefix(4).joined(separator: "; "))") }
        var layers: [LoRALayer] = []
        var report: [LoRAExtraction] = []
        for (name, m) in model.namedModules() where targets.contains(name, m) {
            guard let layer = m as? LoRAAdaptable else { continue }
            let key = name + ".weight"
            let w0 = try base.source.tensor(key).converted(to: .f32)
            let w1: Tensor
            do { w1 = try tuned.source.tensor(key).converted(to: .f32) } catch {
                throw FileError(tuned.source.path, "has no \(key), which the base has: the two models differ in architecture")
            }
            guard w1.shape == w0.shape else { throw FileError(tuned.source.path, "\(key) has shape \(w1.shape), the base's \(w0.shape)") }
            let out = w0.shape[0], rest = w0.count / out
            let diff = Kernels.sub(w1, w0).reshaped([out, rest])
            guard let (u, s, vt) = SVD.thin(diff) else { throw FileError(tuned.source.path, "the SVD of \(key)'s difference did not converge") }
            let total = s.reduce(0.0) { $0 + Double($1) * Double($1) }
            guard total > 0 else { continue }
            let r = min(rank, s.count)
            let kept = s.prefix(r).reduce(0.0) { $0 + Double($1) * Double($1) }
            let uf = u.floats, vf = vt.floats, k = s.count
            var upValues = [Float](repeating: 0, count: out * r)
            for i in 0..<out { for j in 0..<r { upValues[i * r + j] = uf[i * k + j] * s[j] } }
            let down = Tensor(shape: layer.loraDownShape(rank: r), floats: Array(vf[0..<(r * rest)]))
            let up = Tensor(shape: layer.loraUpShape(rank: r), floats: upValues)
            layers.append(LoRALayer(component: component, module: name, down: down, up: up, alpha: Float(r)))
            report.append(LoRAExtraction(module: name, rank: r, differenceNorm: total.squareRoot(), keptEnergy: kept / total))
        }
        return (LoRAFile(format: .kohya, layers: layers), report)
    }
}

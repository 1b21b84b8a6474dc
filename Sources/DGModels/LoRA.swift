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

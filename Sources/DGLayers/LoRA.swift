import DGAutograd
import DGTensor

// LoRA (Hu et al. 2021) as PEFT implements it: a frozen layer W gets y = W x + (alpha / r) B(A x),
// A [r, in] Kaiming-uniform (a = sqrt(5)), B [out, r] zero, so training starts from the base
// model's outputs exactly. A convolution's A has the layer's kernel, stride and padding and its B
// is 1x1. The adapters are children named `lora_A` / `lora_B` of the layer they adapt, so their
// keys are the keys of a diffusers/PEFT LoRA file and everything that walks parameters (the
// optimizer, clipping, checkpoints) sees them without special cases.

/// Which layers of a UNet get adapters, by their diffusers names.
public enum LoRATargets: String, CaseIterable, Sendable {
    /// Attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`) and the transformers'
    /// `proj_in` / `proj_out`: diffusers' DreamBooth-LoRA script.
    case attn
    /// `attn` and the feed-forward layers (`ff.net.0.proj`, `ff.net.2`): kohya's default,
    /// every linear layer of a Transformer2DModel.
    case attnFF = "attn+ff"
    /// Every linear layer (time embedding and ResNet time projections too), and proj_in / proj_out.
    case allLinear = "all-linear"
    /// Every linear layer and every convolution.
    case all

    /// Whether the layer `name` (a diffusers module path) gets an adapter.
    public func contains(_ name: String, _ module: Module) -> Bool {
        guard module is Linear || module is Conv2d else { return false }
        let last = name.split(separator: ".").last.map(String.init) ?? name
        let attention = ["to_q", "to_k", "to_v", "proj_in", "proj_out"].contains(last) || name.hasSuffix("to_out.0")
        switch self {
        case .attn: return attention
        case .attnFF: return attention || name.hasSuffix("ff.net.0.proj") || name.hasSuffix("ff.net.2")
        case .allLinear: return attention || module is Linear
        case .all: return true
        }
    }
}

extension Module {
    /// Every module below this one (itself as ""), depth first, with its dotted path.
    public func namedModules() -> [(name: String, module: Module)] {
        [("", self)] + namedChildren().flatMap { child in
            child.module.namedModules().map { (name: $0.name.isEmpty ? child.name : child.name + "." + $0.name, module: $0.module) }
        }
    }

    /// Gives every layer `targets` selects a fresh adapter of rank `rank` and scaling alpha/rank,
    /// initialised as PEFT does (A Kaiming-uniform from its own stream of `seed`, B zero).
    /// Returns the adapted layers' names.
    @discardableResult
    public func attachLoRA(rank: Int, alpha: Float, targets: LoRATargets, seed: UInt64) -> [String] {
        var names: [String] = []
        var stream: UInt64 = 0
        for (name, m) in namedModules() where targets.contains(name, m) && !name.contains(".lora_") {
            guard let layer = m as? LoRAAdaptable else { continue }
            stream += 1
            let fanIn = layer.loraDownShape(rank: rank).dropFirst().reduce(1, *)
            let down = uniform(layer.loraDownShape(rank: rank), 1 / Float(fanIn).squareRoot(), seed, stream)
            layer.attachLoRA(down: down, up: Tensor(zeros: layer.loraUpShape(rank: rank)), scale: alpha / Float(rank))
            names.append(name)
        }
        return names
    }

    /// The layers that carry an adapter, by name.
    public func loraLayers() -> [(name: String, layer: LoRAAdaptable)] {
        namedModules().compactMap { name, m in
            guard let l = m as? LoRAAdaptable, l.hasLoRA else { return nil }
            return (name, l)
        }
    }

    /// The adapters' parameters (`...to_q.lora_A.weight`, `...to_q.lora_B.weight`).
    public func loraParameters() -> [(name: String, parameter: Parameter)] {
        namedParameters().filter { $0.name.contains(".lora_A.") || $0.name.contains(".lora_B.") }
    }
}

/// A layer that can carry a LoRA adapter: Linear and Conv2d.
public protocol LoRAAdaptable: Module {
    /// The layer's own weight.
    var weight: Parameter { get }
    /// A's and B's shapes at rank r.
    func loraDownShape(rank: Int) -> [Int]
    func loraUpShape(rank: Int) -> [Int]
    /// The adapter's two layers at rank r, without values: A with this layer's geometry, B
    /// mapping the rank back to the outputs, neither with a bias.
    func makeLoRALayers(rank: Int) -> (down: Self, up: Self)
    /// The adapter as stored (`lora_A`, `lora_B`, scaling); nil without one.
    var lora: (down: Self, up: Self, scale: Float)? { get set }
}

extension LoRAAdaptable {
    public var hasLoRA: Bool { lora != nil }

    /// Attaches an adapter with these values (A: `down`, B: `up`) and scaling.
    public func attachLoRA(down: Tensor, up: Tensor, scale: Float) {
        let r = down.shape[0]
        precondition(down.shape == loraDownShape(rank: r) && up.shape == loraUpShape(rank: r),
                     "LoRA factors \(down.shape), \(up.shape) for a layer of weight \(weight.shape)")
        let (a, b) = makeLoRALayers(rank: r)
        a.weight.value = down
        b.weight.value = up
        lora = (a, b, scale)
    }

    /// (A, B, scaling) of the adapter, nil without one.
    public var loraFactors: (down: Parameter, up: Parameter, scale: Float)? { lora.map { ($0.down.weight, $0.up.weight, $0.scale) } }

    public func detachLoRA() { lora = nil }

    /// Adds scale * (alpha/r) * B A into the layer's weight (stored as float32 from then on), as
    /// diffusers' fuse_lora does; a scale of 0 leaves the weight as it is.
    public func mergeLowRank(down: Tensor, up: Tensor, scale: Float) {
        guard scale != 0, let w = weight.value else { return }
        // Summed in f32, stored back as the weight was (a bf16 pipeline stays bf16, as diffusers'
        // fuse_lora keeps the model's dtype).
        weight.value = Kernels.addScaled(w.converted(to: .f32), lowRankProduct(down: down, up: up).reshaped(w.shape), scale)
            .converted(to: w.dtype)
    }
}

/// B A as a matrix [out, in * k * k] (A [r, in(, k, k)], B [out, r(, 1, 1)]).
public func lowRankProduct(down: Tensor, up: Tensor) -> Tensor {
    let r = down.shape[0]
    let a = down.converted(to: .f32).contiguous().reshaped([r, down.count / r])
    let b = up.converted(to: .f32).contiguous().reshaped([up.shape[0], r])
    return b.matmul(a)
}

extension Linear: LoRAAdaptable {
    public func loraDownShape(rank: Int) -> [Int] { [rank, inFeatures] }
    public func loraUpShape(rank: Int) -> [Int] { [outFeatures, rank] }
    public func makeLoRALayers(rank: Int) -> (down: Linear, up: Linear) { (Linear(inFeatures, rank, bias: false), Linear(rank, outFeatures, bias: false)) }

    public var lora: (down: Linear, up: Linear, scale: Float)? {
        get { lora_A.flatMap { a in lora_B.map { (a, $0, loraScale) } } }
        set { (lora_A, lora_B, loraScale) = (newValue?.down, newValue?.up, newValue?.scale ?? 0) }
    }
}

extension Conv2d: LoRAAdaptable {
    public func loraDownShape(rank: Int) -> [Int] { [rank, inChannels, kernel, kernel] }
    public func loraUpShape(rank: Int) -> [Int] { [outChannels, rank, 1, 1] }
    public func makeLoRALayers(rank: Int) -> (down: Conv2d, up: Conv2d) {
        (Conv2d(inChannels, rank, kernel: kernel, stride: stride, padding: padding, bias: false), Conv2d(rank, outChannels, kernel: 1, bias: false))
    }

    public var lora: (down: Conv2d, up: Conv2d, scale: Float)? {
        get { lora_A.flatMap { a in lora_B.map { (a, $0, loraScale) } } }
        set { (lora_A, lora_B, loraScale) = (newValue?.down, newValue?.up, newValue?.scale ?? 0) }
    }
}

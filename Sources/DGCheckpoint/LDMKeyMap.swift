import DGBase
/// The names of Stable Diffusion 1.x parameters in the original single-file layouts and in the
/// diffusers / transformers layout, both ways, as one table.
///
/// Layouts:
/// - original Stable Diffusion single file ("LDM"): the UNet under `model.diffusion_model.`, the VAE
///   under `first_stage_model.`, the CLIP text encoder under `cond_stage_model.transformer.`
///   (optionally followed by `text_model.`, as transformers 4 wrote it), plus non-parameter buffers
///   (`betas`, `alphas_cumprod`, ...) and optional EMA copies of the UNet (`model_ema.*`);
/// - original ControlNet file: `control_model.` (the UNet's encoder half plus the hint encoder and
///   the zero convolutions);
/// - diffusers: one name space per component (`unet`, `vae`, `text_encoder`, `controlnet`), as in a
///   diffusers pipeline folder. Text-encoder names are those of transformers 5 (`encoder.layers.0...`,
///   no `text_model.` prefix); the older `text_model.`-prefixed spelling is accepted on input.
///
/// The table is built once from the diffusers configs (layers per block, which blocks have
/// attention, which have a down/upsampler, channel counts that decide where a resnet has a shortcut
/// convolution), so it lists exactly the parameters the models have: `mappings` is the full
/// parameter list of all four components, and every lookup is a dictionary hit.
///
/// One tensor changes shape across the layouts: the VAE mid-block attention projections are 1x1
/// convolutions `[C, C, 1, 1]` in LDM files and linear layers `[C, C]` in diffusers
/// (`Mapping.attentionReshape`). The bytes are the same; only the shape differs.
///
/// Use: `let map = try LDMKeyMap(unetConfig: ..., vaeConfig: ...)`; for each key of a single file,
/// `map.classify(key)` says whether it is a parameter (with its component and diffusers name), an EMA
/// copy, a known non-parameter key, or unknown (to report by name); `map.mappings` lists every
/// parameter, so a loader can also name the ones a file lacks. Writing a single file goes the other
/// way with `map.ldm(component:name:)`. A standalone VAE file (`encoder.*`, `decoder.*`, ...) reads
/// with the keys prefixed by `first_stage_model.`.
public enum LDMComponent: String, CaseIterable, Sendable {
    case unet, vae, textEncoder = "text_encoder", controlnet
}

public struct LDMKeyMap: Sendable {
    /// One parameter under both names.
    public struct Mapping: Equatable, Sendable {
        public let component: LDMComponent
        /// The full key in the single file (`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`).
        public let ldm: String
        /// The name inside the component's diffusers state dict (`down_blocks.0.resnets.0.norm1.weight`).
        public let diffusers: String
        /// A VAE attention weight: `[C, C, 1, 1]` in the LDM file, `[C, C]` in diffusers.
        public let attentionReshape: Bool

        /// The diffusers shape of a tensor stored under `ldm` with `shape`; nil when a reshaped
        /// tensor does not have the shape it must have. A `[C, C]` LDM tensor (as some tools write
        /// it) is accepted as is.
        public func diffusersShape(fromLDM shape: [Int]) -> [Int]? {
            guard attentionReshape else { return shape }
            if shape.count == 4, shape[2] == 1, shape[3] == 1 { return Array(shape[0..<2]) }
            return shape.count == 2 ? shape : nil
        }

        /// The LDM shape of a tensor stored under `diffusers` with `shape`; nil when a reshaped
        /// tensor does not have the shape it must have.
        public func ldmShape(fromDiffusers shape: [Int]) -> [Int]? {
            guard attentionReshape else { return shape }
            if shape.count == 2 { return shape + [1, 1] }
            return shape.count == 4 && shape[2] == 1 && shape[3] == 1 ? shape : nil
        }
    }

    /// What a key of a single file is.
    public enum KeyKind: Equatable, Sendable {
        /// A parameter of one of the models.
        case parameter(Mapping)
        /// The EMA copy of the UNet parameter with this LDM key.
        case ema(of: String)
        /// A known non-parameter key (noise-schedule buffers, EMA bookkeeping, position ids).
        case ignored
        /// Neither: callers should report it by name.
        case unknown
    }

    /// Every parameter of the UNet, VAE, text encoder and ControlNet, in diffusers module order.
    public let mappings: [Mapping]
    private let byLDM: [String: Int]          // canonical LDM key (no `text_model.`) -> mapping
    private let byDiffusers: [String: Int]    // "component/diffusers name" -> mapping
    private let emaToLDM: [String: String]

    /// Builds the table from the diffusers `config.json` of each component; nil means the
    /// Stable Diffusion 1.5 config (the ControlNet with SD 1.5's `conditioning_embedding_out_channels`).
    /// A key missing from a given config takes the diffusers default of that model class.
    /// `clipTextModelPrefix` chooses how text-encoder keys are written: `cond_stage_model.transformer.`
    /// + name (false, as transformers 5 and this project's fixtures write them) or with `text_model.`
    /// in between (true, as published SD 1.5 files and transformers-4 tools have them). Both are read.
    /// Throws for configs with blocks or features this table does not know.
    public init(unetConfig: JSON? = nil, vaeConfig: JSON? = nil, textEncoderConfig: JSON? = nil,
                controlnetConfig: JSON? = nil, clipTextModelPrefix: Bool = false) throws {
        var table = Table()
        do {
            try table.addUNet(UNetLayout(unetConfig ?? LDMKeyMap.sd15UNet, model: "unet", withUpBlocks: true))
            try table.addVAE(VAELayout(vaeConfig ?? LDMKeyMap.sd15VAE))
            try table.addTextEncoder(layers: ConfigReader(textEncoderConfig.map { $0["text_config"] ?? $0 } ?? .object([]),
                                                          model: "text_encoder").positiveInt("num_hidden_layers", default: 12),
                                     ldmPrefix: clipTextModelPrefix ? LDMKeyMap.clipRoot + "text_model." : LDMKeyMap.clipRoot)
            try table.addControlNet(ControlNetLayout(controlnetConfig ?? LDMKeyMap.sd15ControlNet))
        } catch let e as ModelConfigError {
            // A config the key map cannot follow is a problem of the checkpoint being converted.
            throw FileError(e.model + " config", e.key.isEmpty ? e.problem : "\"\(e.key)\" \(e.problem)")
        }

        var byLDM: [String: Int] = [:], byDiffusers: [String: Int] = [:], ema: [String: String] = [:]
        for (i, m) in table.mappings.enumerated() {
            let canonical = LDMKeyMap.canonicalLDMKey(m.ldm)
            // Not `precondition(updateValue(...) == nil)`: -Ounchecked drops the whole expression.
            if byLDM.updateValue(i, forKey: canonical) != nil { fatalError("LDM key \(m.ldm) mapped twice") }
            if byDiffusers.updateValue(i, forKey: m.component.rawValue + "/" + m.diffusers) != nil {
                fatalError("\(m.component.rawValue) key \(m.diffusers) mapped twice")
            }
            if m.component == .unet, let e = LDMKeyMap.emaKey(forLDM: m.ldm) {
                // Removing the dots could make two keys one; then neither EMA key is trusted.
                ema[e] = ema[e] == nil ? m.ldm : ""
            }
        }
        mappings = table.mappings
        self.byLDM = byLDM
        self.byDiffusers = byDiffusers
        emaToLDM = ema.filter { !$0.value.isEmpty }
    }

    // MARK: lookups

    /// What `key` (a key of an LDM single file or original ControlNet file) is.
    public func classify(_ key: String) -> KeyKind {
        let canonical = LDMKeyMap.canonicalLDMKey(key)
        if let i = byLDM[canonical] { return .parameter(mappings[i]) }
        if LDMKeyMap.ignoredLDMKeys.contains(canonical) { return .ignored }
        if let target = emaToLDM[key] { return .ema(of: target) }
        return .unknown
    }

    /// The component and diffusers name of an LDM parameter key; nil for ignored keys, EMA keys and
    /// unknown keys (tell them apart with `classify`).
    public func diffusers(fromLDM key: String) -> (component: LDMComponent, name: String)? {
        guard let i = byLDM[LDMKeyMap.canonicalLDMKey(key)] else { return nil }
        return (mappings[i].component, mappings[i].diffusers)
    }

    /// The mapping of a diffusers parameter (older spellings accepted, see `canonicalDiffusersName`).
    public func mapping(component: LDMComponent, diffusersName name: String) -> Mapping? {
        byDiffusers[component.rawValue + "/" + LDMKeyMap.canonicalDiffusersName(name, component: component)]
            .map { mappings[$0] }
    }

    /// The LDM key of a diffusers parameter; nil when the component has no such parameter.
    public func ldm(component: LDMComponent, name: String) -> String? {
        mapping(component: component, diffusersName: name)?.ldm
    }

    /// True for the VAE attention weights: LDM shape `[C, C, 1, 1]` <-> diffusers `[C, C]`.
    public func needsAttentionReshape(component: LDMComponent, diffusersName: String) -> Bool {
        mapping(component: component, diffusersName: diffusersName)?.attentionReshape ?? false
    }

    /// The key under which a single file keeps the EMA copy of a UNet parameter: `model_ema.` +
    /// the key without its `model.` prefix and without dots
    /// (`model.diffusion_model.input_blocks.0.0.weight` -> `model_ema.diffusion_modelinput_blocks00weight`).
    /// nil for keys outside the UNet.
    public static func emaKey(forLDM key: String) -> String? {
        guard key.hasPrefix(unetRoot) else { return nil }
        return "model_ema." + String(key.dropFirst("model.".count).filter { $0 != "." })
    }

    /// True for the non-parameter keys published single files hold: the noise-schedule buffers,
    /// the EMA bookkeeping and the CLIP position ids.
    public static func isIgnoredLDMKey(_ key: String) -> Bool {
        ignoredLDMKeys.contains(canonicalLDMKey(key))
    }

    /// True for non-parameter names a diffusers state dict may hold: the CLIP position ids that
    /// transformers 4 saved (`text_model.embeddings.position_ids`).
    public static func isIgnoredDiffusersName(_ name: String, component: LDMComponent) -> Bool {
        component == .textEncoder && canonicalDiffusersName(name, component: component) == "embeddings.position_ids"
    }

    /// A diffusers name in its current spelling: text-encoder names without transformers 4's
    /// `text_model.` prefix, VAE attention names `query`/`key`/`value`/`proj_attn` (diffusers < 0.14)
    /// as `to_q`/`to_k`/`to_v`/`to_out.0`.
    public static func canonicalDiffusersName(_ name: String, component: LDMComponent) -> String {
        switch component {
        case .textEncoder:
            return name.hasPrefix("text_model.") ? String(name.dropFirst("text_model.".count)) : name
        case .vae:
            var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 2, let k = parts.firstIndex(of: "attentions"), k + 2 < parts.count,
                  let new = deprecatedVAEAttentionNames[parts[k + 2]] else { return name }
            parts[k + 2] = new
            return parts.joined(separator: ".")
        case .unet, .controlnet:
            return name
        }
    }

    // MARK: the rules

    static let unetRoot = "model.diffusion_model."
    static let vaeRoot = "first_stage_model."
    static let clipRoot = "cond_stage_model.transformer."
    static let controlRoot = "control_model."

    /// LDM single-file keys that are not parameters (LatentDiffusion's registered buffers).
    static let ignoredLDMKeys: Set<String> = [
        "betas", "alphas_cumprod", "alphas_cumprod_prev",
        "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "logvar", "lvlb_weights",
        "model_ema.decay", "model_ema.num_updates",
        // CLIP's position ids are a buffer (0..<77), not a weight; transformers 5 does not save it.
        clipRoot + "embeddings.position_ids",
    ]

    static let deprecatedVAEAttentionNames = ["query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"]

    /// `cond_stage_model.transformer.text_model.X` -> `cond_stage_model.transformer.X`.
    static func canonicalLDMKey(_ key: String) -> String {
        let long = clipRoot + "text_model."
        return key.hasPrefix(long) ? clipRoot + key.dropFirst(long.count) : key
    }

    /// One module inside a block: its LDM name, its diffusers name, whether it has a bias, and
    /// whether its weight is a VAE attention projection (1x1 conv <-> linear).
    struct Leaf {
        let ldm: String, diffusers: String
        let bias: Bool, attentionReshape: Bool
        init(_ ldm: String, _ diffusers: String, bias: Bool = true, attentionReshape: Bool = false) {
            self.ldm = ldm
            self.diffusers = diffusers
            self.bias = bias
            self.attentionReshape = attentionReshape
        }
    }

    /// LDM `ResBlock` <-> diffusers `ResnetBlock2D` (UNet, ControlNet). The 1x1 shortcut exists
    /// where input and output channels differ.
    static func unetResnet(shortcut: Bool) -> [Leaf] {
        [Leaf("in_layers.0", "norm1"), Leaf("in_layers.2", "conv1"),
         Leaf("emb_layers.1", "time_emb_proj"),
         Leaf("out_layers.0", "norm2"), Leaf("out_layers.3", "conv2")]
            + (shortcut ? [Leaf("skip_connection", "conv_shortcut")] : [])
    }

    /// LDM `SpatialTransformer` <-> diffusers `Transformer2DModel`: the same names on both sides.
    static func spatialTransformer(depth: Int) -> [Leaf] {
        var leaves = [Leaf("norm", "norm"), Leaf("proj_in", "proj_in")]
        for t in 0..<depth {
            let b = "transformer_blocks.\(t)."
            for attn in ["attn1", "attn2"] {
                leaves += ["to_q", "to_k", "to_v"].map { Leaf(b + attn + "." + $0, b + attn + "." + $0, bias: false) }
                leaves.append(Leaf(b + attn + ".to_out.0", b + attn + ".to_out.0"))
            }
            leaves += ["norm1", "norm2", "norm3", "ff.net.0.proj", "ff.net.2"].map { Leaf(b + $0, b + $0) }
        }
        return leaves + [Leaf("proj_out", "proj_out")]
    }

    /// LDM VAE `ResnetBlock` <-> diffusers `ResnetBlock2D` (no time embedding).
    static func vaeResnet(shortcut: Bool) -> [Leaf] {
        [Leaf("norm1", "norm1"), Leaf("conv1", "conv1"), Leaf("norm2", "norm2"), Leaf("conv2", "conv2")]
            + (shortcut ? [Leaf("nin_shortcut", "conv_shortcut")] : [])
    }

    /// LDM VAE `AttnBlock` (1x1 convolutions) <-> diffusers `Attention` (linear layers).
    static let vaeAttention: [Leaf] = [
        Leaf("norm", "group_norm"),
        Leaf("q", "to_q", attentionReshape: true), Leaf("k", "to_k", attentionReshape: true),
        Leaf("v", "to_v", attentionReshape: true), Leaf("proj_out", "to_out.0", attentionReshape: true),
    ]

    /// CLIP text transformer: the same names in both layouts, under a prefix in the single file.
    static func clipLayer(_ n: Int) -> [Leaf] {
        let l = "encoder.layers.\(n)."
        return ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"].map { Leaf(l + $0, l + $0) }
    }

    /// Collects mappings, one block at a time.
    struct Table {
        var mappings: [Mapping] = []

        mutating func add(_ c: LDMComponent, ldm: String, diffusers: String, _ leaves: [Leaf]) {
            for leaf in leaves {
                let l = ldm + leaf.ldm + ".", d = diffusers + leaf.diffusers + "."
                mappings.append(Mapping(component: c, ldm: l + "weight", diffusers: d + "weight",
                                        attentionReshape: leaf.attentionReshape))
                if leaf.bias {
                    mappings.append(Mapping(component: c, ldm: l + "bias", diffusers: d + "bias", attentionReshape: false))
                }
            }
        }

        /// A single module (a conv, linear or norm) with weight and bias.
        mutating func add(_ c: LDMComponent, ldm: String, diffusers: String, bias: Bool = true) {
            add(c, ldm: "", diffusers: "", [Leaf(ldm, diffusers, bias: bias)])
        }

        /// `time_embed`, `conv_in`, the down blocks and the mid block: common to the UNet and
        /// the ControlNet. Returns how many `input_blocks` there are (one zero conv each).
        @discardableResult
        mutating func addEncoderHalf(_ u: UNetLayout, _ c: LDMComponent, root: String) -> Int {
            add(c, ldm: root + "time_embed.0", diffusers: "time_embedding.linear_1")
            add(c, ldm: root + "time_embed.2", diffusers: "time_embedding.linear_2")
            add(c, ldm: root + "input_blocks.0.0", diffusers: "conv_in")
            var block = 1  // input_blocks.0 is conv_in
            var channels = u.channels[0]
            for i in u.channels.indices {
                for j in 0..<u.layers[i] {
                    add(c, ldm: root + "input_blocks.\(block).0.", diffusers: "down_blocks.\(i).resnets.\(j).",
                        LDMKeyMap.unetResnet(shortcut: channels != u.channels[i]))
                    channels = u.channels[i]
                    if u.downAttention[i] {
                        add(c, ldm: root + "input_blocks.\(block).1.", diffusers: "down_blocks.\(i).attentions.\(j).",
                            LDMKeyMap.spatialTransformer(depth: u.depth[i]))
                    }
                    block += 1
                }
                if i < u.channels.count - 1 {  // every block but the last halves the resolution
                    add(c, ldm: root + "input_blocks.\(block).0.op", diffusers: "down_blocks.\(i).downsamplers.0.conv")
                    block += 1
                }
            }
            switch u.mid {
            case .crossAttention(let depth):
                add(c, ldm: root + "middle_block.0.", diffusers: "mid_block.resnets.0.", LDMKeyMap.unetResnet(shortcut: false))
                add(c, ldm: root + "middle_block.1.", diffusers: "mid_block.attentions.0.", LDMKeyMap.spatialTransformer(depth: depth))
                add(c, ldm: root + "middle_block.2.", diffusers: "mid_block.resnets.1.", LDMKeyMap.unetResnet(shortcut: false))
            case .plain:
                add(c, ldm: root + "middle_block.0.", diffusers: "mid_block.resnets.0.", LDMKeyMap.unetResnet(shortcut: false))
                add(c, ldm: root + "middle_block.1.", diffusers: "mid_block.resnets.1.", LDMKeyMap.unetResnet(shortcut: false))
            case .absent:
                break
            }
            return block
        }

        mutating func addUNet(_ u: UNetLayout) {
            let root = LDMKeyMap.unetRoot
            addEncoderHalf(u, .unet, root: root)
            // Up blocks run from the deepest level; each resnet also takes a skip connection.
            let channels = Array(u.channels.reversed())
            var block = 0
            var previous = channels[0]
            for i in channels.indices {
                let layers = u.upLayers[i]
                for j in 0..<layers {
                    let skip = j == layers - 1 ? channels[min(i + 1, channels.count - 1)] : channels[i]
                    let input = (j == 0 ? previous : channels[i]) + skip
                    add(.unet, ldm: root + "output_blocks.\(block).0.", diffusers: "up_blocks.\(i).resnets.\(j).",
                        LDMKeyMap.unetResnet(shortcut: input != channels[i]))
                    var slot = 1
                    if u.upAttention[i] {
                        add(.unet, ldm: root + "output_blocks.\(block).1.", diffusers: "up_blocks.\(i).attentions.\(j).",
                            LDMKeyMap.spatialTransformer(depth: u.upDepth[i]))
                        slot = 2
                    }
                    if j == layers - 1, i < channels.count - 1 {  // the upsampler ends the block's last output block
                        add(.unet, ldm: root + "output_blocks.\(block).\(slot).conv", diffusers: "up_blocks.\(i).upsamplers.0.conv")
                    }
                    block += 1
                }
                previous = channels[i]
            }
            add(.unet, ldm: root + "out.0", diffusers: "conv_norm_out")
            add(.unet, ldm: root + "out.2", diffusers: "conv_out")
        }

        mutating func addVAE(_ v: VAELayout) {
            let root = LDMKeyMap.vaeRoot
            func mid(_ part: String) {
                add(.vae, ldm: root + part + ".mid.block_1.", diffusers: part + ".mid_block.resnets.0.", LDMKeyMap.vaeResnet(shortcut: false))
                if v.midAttention {
                    add(.vae, ldm: root + part + ".mid.attn_1.", diffusers: part + ".mid_block.attentions.0.", LDMKeyMap.vaeAttention)
                }
                add(.vae, ldm: root + part + ".mid.block_2.", diffusers: part + ".mid_block.resnets.1.", LDMKeyMap.vaeResnet(shortcut: false))
            }
            let n = v.channels.count
            // Encoder: encoder.down.i <-> encoder.down_blocks.i.
            add(.vae, ldm: root + "encoder.conv_in", diffusers: "encoder.conv_in")
            var channels = v.channels[0]
            for i in 0..<n {
                for j in 0..<v.layers {
                    add(.vae, ldm: root + "encoder.down.\(i).block.\(j).", diffusers: "encoder.down_blocks.\(i).resnets.\(j).",
                        LDMKeyMap.vaeResnet(shortcut: channels != v.channels[i]))
                    channels = v.channels[i]
                }
                if i < n - 1 {
                    add(.vae, ldm: root + "encoder.down.\(i).downsample.conv", diffusers: "encoder.down_blocks.\(i).downsamplers.0.conv")
                }
            }
            mid("encoder")
            add(.vae, ldm: root + "encoder.norm_out", diffusers: "encoder.conv_norm_out")
            add(.vae, ldm: root + "encoder.conv_out", diffusers: "encoder.conv_out")
            if v.quantConv { add(.vae, ldm: root + "quant_conv", diffusers: "quant_conv") }
            if v.postQuantConv { add(.vae, ldm: root + "post_quant_conv", diffusers: "post_quant_conv") }
            // Decoder: LDM numbers its levels by resolution (decoder.up.0 is the full-resolution
            // one, run last); diffusers numbers them in execution order: up_blocks.i <-> up.(n-1-i).
            add(.vae, ldm: root + "decoder.conv_in", diffusers: "decoder.conv_in")
            mid("decoder")
            let reversed = Array(v.channels.reversed())
            channels = reversed[0]
            for i in 0..<n {
                let level = n - 1 - i
                for j in 0..<v.layers + 1 {
                    add(.vae, ldm: root + "decoder.up.\(level).block.\(j).", diffusers: "decoder.up_blocks.\(i).resnets.\(j).",
                        LDMKeyMap.vaeResnet(shortcut: channels != reversed[i]))
                    channels = reversed[i]
                }
                if level != 0 {
                    add(.vae, ldm: root + "decoder.up.\(level).upsample.conv", diffusers: "decoder.up_blocks.\(i).upsamplers.0.conv")
                }
            }
            add(.vae, ldm: root + "decoder.norm_out", diffusers: "decoder.conv_norm_out")
            add(.vae, ldm: root + "decoder.conv_out", diffusers: "decoder.conv_out")
        }

        mutating func addTextEncoder(layers: Int, ldmPrefix: String) {
            add(.textEncoder, ldm: ldmPrefix, diffusers: "",
                [Leaf("embeddings.token_embedding", "embeddings.token_embedding", bias: false),
                 Leaf("embeddings.position_embedding", "embeddings.position_embedding", bias: false)])
            for n in 0..<layers { add(.textEncoder, ldm: ldmPrefix, diffusers: "", LDMKeyMap.clipLayer(n)) }
            add(.textEncoder, ldm: ldmPrefix + "final_layer_norm", diffusers: "final_layer_norm")
        }

        mutating func addControlNet(_ cn: ControlNetLayout) {
            let root = LDMKeyMap.controlRoot
            // The hint encoder is one Sequential with a SiLU after every conv: convs at even indices.
            let convs = 2 * cn.hintChannels  // conv_in, two per change of channels, conv_out
            add(.controlnet, ldm: root + "input_hint_block.0", diffusers: "controlnet_cond_embedding.conv_in")
            for k in 0..<convs - 2 {
                add(.controlnet, ldm: root + "input_hint_block.\(2 * (k + 1))", diffusers: "controlnet_cond_embedding.blocks.\(k)")
            }
            add(.controlnet, ldm: root + "input_hint_block.\(2 * (convs - 1))", diffusers: "controlnet_cond_embedding.conv_out")
            let blocks = addEncoderHalf(cn.unet, .controlnet, root: root)
            for n in 0..<blocks {
                add(.controlnet, ldm: root + "zero_convs.\(n).0", diffusers: "controlnet_down_blocks.\(n)")
            }
            if cn.unet.mid != .absent {
                add(.controlnet, ldm: root + "middle_block_out.0", diffusers: "controlnet_mid_block")
            }
        }
    }

    // MARK: configs

    /// Reads config values, with the model class's defaults for absent or null keys.
    enum MidBlock: Equatable { case crossAttention(depth: Int), plain, absent }

    /// The block structure of a UNet2DConditionModel (or of a ControlNetModel's encoder half).
    struct UNetLayout {
        var channels: [Int]          // block_out_channels
        var layers: [Int]            // resnets per down block
        var downAttention: [Bool]
        var depth: [Int]             // transformer blocks per attention, per down block
        var upLayers: [Int] = []     // resnets per up block (layers + 1, reversed)
        var upAttention: [Bool] = []
        var upDepth: [Int] = []
        var mid: MidBlock

        init(_ json: JSON, model: String, withUpBlocks: Bool) throws {
            let r = try ConfigReader(json, model: model)
            for key in ["class_embed_type", "num_class_embeds", "addition_embed_type", "encoder_hid_dim",
                        "encoder_hid_dim_type", "time_cond_proj_dim", "time_embedding_dim"] { try r.requireUnset(key) }
            try r.require("dual_cross_attention", in: [false])
            try r.require("attention_type", in: ["default"])
            try r.require("time_embedding_type", in: ["positional"])
            let down = try r.strings("down_block_types", default: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
            channels = try r.positiveInts("block_out_channels", default: [320, 640, 1280, 1280])
            guard channels.count == down.count else {
                throw r.error("block_out_channels", "has \(channels.count) entries for \(down.count) down blocks")
            }
            downAttention = try down.map {
                switch $0 {
                case "CrossAttnDownBlock2D": return true
                case "DownBlock2D": return false
                default: throw r.error("down_block_types", "holds \($0), which is not supported")
                }
            }
            layers = try r.perBlockPositiveInts("layers_per_block", count: down.count, default: 2)
            depth = try r.perBlockPositiveInts("transformer_layers_per_block", count: down.count, default: 1)
            switch r.json["mid_block_type"] == nil ? "UNetMidBlock2DCrossAttn" : try r.optionalString("mid_block_type") {
            case "UNetMidBlock2DCrossAttn"?: mid = .crossAttention(depth: depth[depth.count - 1])
            case "UNetMidBlock2D"?: mid = .plain
            case nil: mid = .absent
            case let t?: throw r.error("mid_block_type", "\(t) is not supported")
            }
            guard withUpBlocks else { return }
            let up = try r.strings("up_block_types", default: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
            guard up.count == down.count else { throw r.error("up_block_types", "has \(up.count) up blocks for \(down.count) down blocks") }
            upAttention = try up.map {
                switch $0 {
                case "CrossAttnUpBlock2D": return true
                case "UpBlock2D": return false
                default: throw r.error("up_block_types", "holds \($0), which is not supported")
                }
            }
            upLayers = layers.reversed().map { $0 + 1 }
            upDepth = r.present("reverse_transformer_layers_per_block") == nil
                ? depth.reversed() : try r.perBlockPositiveInts("reverse_transformer_layers_per_block", count: up.count, default: 1)
        }
    }

    struct VAELayout {
        var channels: [Int]
        var layers: Int
        var midAttention: Bool
        var quantConv: Bool
        var postQuantConv: Bool

        init(_ json: JSON) throws {
            let r = try ConfigReader(json, model: "vae")
            let down = try r.strings("down_block_types", default: ["DownEncoderBlock2D"])
            let up = try r.strings("up_block_types", default: ["UpDecoderBlock2D"])
            channels = try r.positiveInts("block_out_channels", default: [64])
            guard down.allSatisfy({ $0 == "DownEncoderBlock2D" }), up.allSatisfy({ $0 == "UpDecoderBlock2D" }) else {
                throw r.error("down_block_types", "only DownEncoderBlock2D / UpDecoderBlock2D blocks are supported")
            }
            guard down.count == channels.count, up.count == channels.count else {
                throw r.error("block_out_channels", "\(down.count) down blocks and \(up.count) up blocks for \(channels.count) block_out_channels")
            }
            layers = try r.positiveInt("layers_per_block", default: 1)
            midAttention = try r.bool("mid_block_add_attention", default: true)
            quantConv = try r.bool("use_quant_conv", default: true)
            postQuantConv = try r.bool("use_post_quant_conv", default: true)
        }
    }

    struct ControlNetLayout {
        var unet: UNetLayout
        var hintChannels: Int  // entries of conditioning_embedding_out_channels

        init(_ json: JSON) throws {
            unet = try UNetLayout(json, model: "controlnet", withUpBlocks: false)
            hintChannels = try ConfigReader(json, model: "controlnet").positiveInts("conditioning_embedding_out_channels", default: [16, 32, 96, 256]).count
        }
    }

    /// The parts of the Stable Diffusion 1.5 configs the table depends on.
    static let sd15UNet: JSON = [
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "transformer_layers_per_block": 1,
    ]
    static let sd15VAE: JSON = [
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "mid_block_add_attention": true,
        "use_quant_conv": true,
        "use_post_quant_conv": true,
    ]
    static let sd15ControlNet: JSON = [
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "transformer_layers_per_block": 1,
        "conditioning_embedding_out_channels": [16, 32, 96, 256],
    ]
}

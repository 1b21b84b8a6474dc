import DGBase
import DGCheckpoint
import DGLayers

/// The activation inside CLIP's MLP: SD 1.x (OpenAI CLIP) uses quick_gelu, SD 2.x (OpenCLIP) gelu.
public enum CLIPActivation: String, Sendable {
    case quickGELU = "quick_gelu"
    case gelu
}

/// Stable Diffusion's text encoder (transformers `CLIPTextModel`), from transformers'
/// `CLIPTextConfig` json: token + position embeddings, pre-LayerNorm transformer layers with
/// causal self-attention, a final LayerNorm.
///
/// Keys are those of transformers 5.6 and later, which flattened this model: `embeddings.*`,
/// `encoder.*`, `final_layer_norm.*` (our fixtures and manifest come from 5.24). Files saved by
/// earlier versions, the published SD 1.5 text encoder among them, put `text_model.` in front of
/// every key (`legacyKeyPrefix`). `embeddings.position_ids` is a non-persistent buffer, not a
/// parameter: neither the manifest nor the fixtures hold it, though old checkpoints may.
public final class CLIPTextModel: Module {
    public let embeddings: CLIPTextEmbeddings
    public let encoder: CLIPEncoder
    public let final_layer_norm: LayerNorm

    public static let legacyKeyPrefix = "text_model."

    public let config: JSON
    public let vocab_size: Int, hidden_size: Int, intermediate_size: Int
    public let num_hidden_layers: Int, num_attention_heads: Int, max_position_embeddings: Int
    public let layer_norm_eps: Float
    public let hidden_act: CLIPActivation
    /// The pooled output is the hidden state at the first `eos_token_id` (at the highest token
    /// id when this is 2, a legacy convention of old configs).
    public let eos_token_id: Int

    public init(config: JSON) throws {
        let r = try ConfigReader(config, model: "CLIPTextModel")
        let vocab_size = try r.positiveInt("vocab_size", default: 49408)
        let hidden_size = try r.positiveInt("hidden_size", default: 512)
        let intermediate_size = try r.positiveInt("intermediate_size", default: 2048)
        let num_hidden_layers = try r.positiveInt("num_hidden_layers", default: 12)
        let num_attention_heads = try r.positiveInt("num_attention_heads", default: 8)
        guard hidden_size % num_attention_heads == 0 else {
            throw r.error("num_attention_heads", "= \(num_attention_heads) does not divide hidden_size \(hidden_size)")
        }
        let max_position_embeddings = try r.positiveInt("max_position_embeddings", default: 77)
        let layer_norm_eps = Float(try r.double("layer_norm_eps", default: 1e-5))
        let act = try r.string("hidden_act", default: "quick_gelu")
        guard let hidden_act = CLIPActivation(rawValue: act) else {
            throw r.error("hidden_act", "= \"\(act)\" is not supported (only \"quick_gelu\" or \"gelu\")")
        }
        eos_token_id = try r.int("eos_token_id", default: 49407)
        self.config = config
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.hidden_act = hidden_act

        embeddings = CLIPTextEmbeddings(vocab_size: vocab_size, embed_dim: hidden_size,
                                        max_position_embeddings: max_position_embeddings)
        encoder = CLIPEncoder(layers: (0..<num_hidden_layers).map { _ in
            CLIPEncoderLayer(embed_dim: hidden_size, intermediate_size: intermediate_size,
                             num_heads: num_attention_heads, layer_norm_eps: layer_norm_eps, hidden_act: hidden_act)
        })
        final_layer_norm = LayerNorm(hidden_size, eps: layer_norm_eps)
    }
}

public final class CLIPTextEmbeddings: Module {
    public let token_embedding: Embedding
    public let position_embedding: Embedding

    public let vocab_size: Int, embed_dim: Int, max_position_embeddings: Int

    public init(vocab_size: Int, embed_dim: Int, max_position_embeddings: Int) {
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.max_position_embeddings = max_position_embeddings
        token_embedding = Embedding(vocab_size, embed_dim)
        position_embedding = Embedding(max_position_embeddings, embed_dim)
    }
}

public final class CLIPEncoder: Module {
    public let layers: [CLIPEncoderLayer]

    public init(layers: [CLIPEncoderLayer]) { self.layers = layers }
}

/// x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x)).
public final class CLIPEncoderLayer: Module {
    public let self_attn: CLIPAttention
    public let layer_norm1: LayerNorm
    public let mlp: CLIPMLP
    public let layer_norm2: LayerNorm

    public init(embed_dim: Int, intermediate_size: Int, num_heads: Int, layer_norm_eps: Float, hidden_act: CLIPActivation) {
        self_attn = CLIPAttention(embed_dim: embed_dim, num_heads: num_heads)
        layer_norm1 = LayerNorm(embed_dim, eps: layer_norm_eps)
        mlp = CLIPMLP(hidden_size: embed_dim, intermediate_size: intermediate_size, hidden_act: hidden_act)
        layer_norm2 = LayerNorm(embed_dim, eps: layer_norm_eps)
    }
}

/// Causal multi-head self-attention; every projection has a bias.
public final class CLIPAttention: Module {
    public let k_proj: Linear
    public let v_proj: Linear
    public let q_proj: Linear
    public let out_proj: Linear

    public let embed_dim: Int, num_heads: Int, head_dim: Int
    public let scale: Float

    public init(embed_dim: Int, num_heads: Int) {
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        head_dim = embed_dim / num_heads
        scale = 1 / Float(head_dim).squareRoot()
        k_proj = Linear(embed_dim, embed_dim)
        v_proj = Linear(embed_dim, embed_dim)
        q_proj = Linear(embed_dim, embed_dim)
        out_proj = Linear(embed_dim, embed_dim)
    }
}

public final class CLIPMLP: Module {
    public let fc1: Linear
    public let fc2: Linear

    public let hidden_act: CLIPActivation

    public init(hidden_size: Int, intermediate_size: Int, hidden_act: CLIPActivation) {
        self.hidden_act = hidden_act
        fc1 = Linear(hidden_size, intermediate_size)
        fc2 = Linear(intermediate_size, hidden_size)
    }
}

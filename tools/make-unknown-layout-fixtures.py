#!/usr/bin/env python3
"""Writes Tests/Fixtures/other/: small safetensors files of no model dginstyle converts, written by
the `safetensors` Python package, for `inspect` (layout "unknown") and `diff`:

- lora-kohya.safetensors: a kohya-style LoRA for the UNet and text encoder (lora_down / lora_up
  in float16, a scalar `alpha` per module, training settings in __metadata__);
- embedding.safetensors: a textual-inversion embedding as AUTOMATIC1111 saves it (`emb_params`,
  2 vectors of 768 float32) with its metadata;
- lora-kohya-trained.safetensors: the same LoRA with one module's lora_up moved, for diff.

    python3 -m venv .venv-ref && .venv-ref/bin/pip install safetensors numpy
    .venv-ref/bin/python tools/make-unknown-layout-fixtures.py
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "Tests/Fixtures/other")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(14)

rank = 4
modules = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32, True),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (32, 32, False),
    "lora_unet_mid_block_attentions_0_proj_out": (64, 64, True),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (32, 32, False),
}
lora = {}
for name, (cin, cout, conv) in modules.items():
    down = rng.standard_normal((rank, cin) + ((1, 1) if conv else ())).astype(np.float16)
    up = (0.01 * rng.standard_normal((cout, rank) + ((1, 1) if conv else ()))).astype(np.float16)
    lora[name + ".lora_down.weight"] = down
    lora[name + ".lora_up.weight"] = up
    lora[name + ".alpha"] = np.array(rank / 2, dtype=np.float16)  # a 0-d tensor, as kohya stores it
metadata = {
    "ss_network_module": "networks.lora",
    "ss_network_dim": str(rank),
    "ss_network_alpha": str(rank / 2),
    "ss_base_model_version": "sd_v1",
    "ss_tag_frequency": json.dumps({"img": {"street": 12, "car": 7}}),
}
save_file(lora, os.path.join(out, "lora-kohya.safetensors"), metadata=metadata)

trained = dict(lora)
key = "lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"
trained[key] = (lora[key].astype(np.float32) * 1.5).astype(np.float16)
save_file(trained, os.path.join(out, "lora-kohya-trained.safetensors"), metadata=metadata)

embedding = {"emb_params": rng.standard_normal((2, 768)).astype(np.float32) * 0.01}
save_file(embedding, os.path.join(out, "embedding.safetensors"),
          metadata={"string_to_param": "{\"*\": \"emb_params\"}", "name": "game-style", "step": "3000", "sd_checkpoint_name": "v1-5-pruned-emaonly"})
for f in sorted(os.listdir(out)):
    print(f, os.path.getsize(os.path.join(out, f)))

"""SV3D's single-file sgm checkpoints (``sv3d_u.safetensors``, ``sv3d_p.safetensors``) mapped
onto diffusers / transformers components, in memory, at load time.

Key prefixes in the sgm file (generative-models ``configs/.../sv3d_{u,p}.yaml``):

* ``model.diffusion_model.``  the VideoUNet -> :class:`diffusers.UNetSpatioTemporalConditionModel`
* ``conditioner.embedders.0.open_clip.model.visual.``  OpenCLIP ViT-H/14 image tower
  -> :class:`transformers.CLIPVisionModelWithProjection`
* ``conditioner.embedders.1.encoder.``  the VAE encoder (+ ``quant_conv``) that makes the
  concat latent
* ``first_stage_model.decoder.``  the image decoder (no ``post_quant_conv``: sgm's
  ``AutoencodingEngine`` decodes straight from the latent)

Shapes are read from the weights; only head sizes are not stored in them (SV3D: 64 per
UNet head, 80 per CLIP head, as in the published configs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
ENCODER_PREFIX = "conditioner.embedders.1.encoder."
DECODER_PREFIX = "first_stage_model."
UNET_HEAD_DIM = 64
CLIP_HEAD_DIM = 80


@dataclass
class SgmParts:
    unet: dict[str, torch.Tensor]
    clip: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]  # ldm names: encoder.*, quant_conv.*, decoder.*


def split_checkpoint(state: dict[str, torch.Tensor]) -> SgmParts:
    def take(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    unet, clip = take(UNET_PREFIX), take(CLIP_PREFIX)
    encoder = take(ENCODER_PREFIX)
    vae = {k: v for k, v in encoder.items() if k.startswith(("encoder.", "quant_conv."))}
    vae.update({k: v for k, v in take(DECODER_PREFIX).items() if k.startswith("decoder.")})
    missing = [name for name, part in (("UNet", unet), ("CLIP image encoder", clip), ("VAE", vae)) if not part]
    if missing or not any(k.startswith("decoder.") for k in vae):
        raise ValueError(f"not an SV3D sgm checkpoint: no {', '.join(missing) or 'VAE decoder'} weights")
    return SgmParts(unet, clip, vae)


# --- UNet --------------------------------------------------------------------------------


def unet_config(sd: dict[str, torch.Tensor], head_dim: int = UNET_HEAD_DIM) -> dict:
    """diffusers ``UNetSpatioTemporalConditionModel`` config of an sgm VideoUNet state dict."""
    ops = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.weight", k)))
    res = ops[0] - 1 if ops else _count(sd, r"input_blocks\.(\d+)\.0\.in_layers\.0\.weight") - 0
    levels = len(ops) + 1
    channels, attention = [], []
    for level in range(levels):
        first = 1 + level * (res + 1)
        channels.append(int(sd[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        attention.append(f"input_blocks.{first}.1.proj_in.weight" in sd)
    context = next(v.shape[1] for k, v in sd.items() if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    depth = _count(sd, r"middle_block\.1\.transformer_blocks\.(\d+)\.norm1\.weight")
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attention))
    return {
        "in_channels": int(sd["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(sd["out.2.weight"].shape[0]),
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": tuple(channels),
        "layers_per_block": res,
        "cross_attention_dim": int(context),
        "transformer_layers_per_block": depth,
        "num_attention_heads": tuple(max(1, c // head_dim) for c in channels),
        "projection_class_embeddings_input_dim": int(sd["label_emb.0.0.weight"].shape[1]),
        "addition_time_embed_dim": 256,
        "num_frames": 21,
    }


def _count(sd: dict, pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


_RESNET = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
]


def _resnet_key(rest: str) -> str:
    """Inside an sgm VideoResBlock -> inside a diffusers SpatioTemporalResBlock."""
    if rest.startswith("time_mixer."):
        return rest
    branch = "spatial_res_block."
    if rest.startswith("time_stack."):
        branch, rest = "temporal_res_block.", rest[len("time_stack."):]
    for old, new in _RESNET:
        if rest.startswith(old):
            return branch + new + rest[len(old):]
    raise KeyError(rest)


def _attention_key(rest: str) -> str:
    """Inside an sgm SpatialVideoTransformer -> inside a diffusers TransformerSpatioTemporalModel."""
    rest = re.sub(r"^time_stack\.", "temporal_transformer_blocks.", rest)
    rest = re.sub(r"^time_pos_embed\.0\.", "time_pos_embed.linear_1.", rest)
    return re.sub(r"^time_pos_embed\.2\.", "time_pos_embed.linear_2.", rest)


def convert_unet(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    res = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    fixed = {
        "time_embed.0.": "time_embedding.linear_1.",
        "time_embed.2.": "time_embedding.linear_2.",
        "label_emb.0.0.": "add_embedding.linear_1.",
        "label_emb.0.2.": "add_embedding.linear_2.",
        "input_blocks.0.0.": "conv_in.",
        "out.0.": "conv_norm_out.",
        "out.2.": "conv_out.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = None
        for old, repl in fixed.items():
            if key.startswith(old):
                new = repl + key[len(old):]
        if new is None:
            new = _block_key(key, res, levels)
        if new in out:
            raise ValueError(f"two sgm keys map to {new}")
        out[new] = value
    return out


def _block_key(key: str, res: int, levels: int) -> str:
    m = re.match(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.(\d+)\.(.*)", key) or re.match(
        r"(middle_block)\.(\d+)\.(.*)", key
    )
    if m is None:
        raise KeyError(f"unexpected sgm UNet key {key}")
    if m.group(1) == "middle_block":
        index, rest = int(m.group(2)), key.split(".", 2)[2]
        if index == 1:
            return "mid_block.attentions.0." + _attention_key(rest)
        return f"mid_block.resnets.{index // 2}." + _resnet_key(rest)
    kind, block, module, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    if kind == "input_blocks":
        level, slot = divmod(block - 1, res + 1)
        if slot == res:  # the downsampler closing a level
            return f"down_blocks.{level}.downsamplers.0.conv." + rest.removeprefix("op.")
        if module == 0:
            return f"down_blocks.{level}.resnets.{slot}." + _resnet_key(rest)
        return f"down_blocks.{level}.attentions.{slot}." + _attention_key(rest)
    level, slot = divmod(block, res + 1)
    if module == 0:
        return f"up_blocks.{level}.resnets.{slot}." + _resnet_key(rest)
    if rest.startswith("conv.") and level < levels - 1 and slot == res:
        return f"up_blocks.{level}.upsamplers.0." + rest
    return f"up_blocks.{level}.attentions.{slot}." + _attention_key(rest)


# --- VAE ---------------------------------------------------------------------------------


def vae_config(sd: dict[str, torch.Tensor]) -> dict:
    ch = int(sd["encoder.conv_in.weight"].shape[0])
    levels = _count(sd, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    out_channels = [int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels)]
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(out_channels),
        "layers_per_block": _count(sd, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"),
        "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]),
        "norm_num_groups": 32 if ch % 32 == 0 else ch,
        "scaling_factor": 0.18215,
        "use_post_quant_conv": False,
    }


def convert_vae(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    converted = convert_ldm_vae_checkpoint(dict(sd), config)
    # 1x1-conv attention weights become linear layers in diffusers.
    return {k: (v[:, :, 0, 0] if v.ndim == 4 and ".attentions." in k and "to_" in k else v) for k, v in converted.items()}


# --- OpenCLIP image tower ----------------------------------------------------------------


def clip_config(sd: dict[str, torch.Tensor], head_dim: int = CLIP_HEAD_DIM) -> dict:
    width = int(sd["conv1.weight"].shape[0])
    patch = int(sd["conv1.weight"].shape[-1])
    tokens = int(sd["positional_embedding"].shape[0])
    grid = round((tokens - 1) ** 0.5)
    return {
        "hidden_size": width,
        "intermediate_size": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": _count(sd, r"transformer\.resblocks\.(\d+)\.ln_1\.weight"),
        "num_attention_heads": max(1, width // head_dim),
        "image_size": grid * patch,
        "patch_size": patch,
        "projection_dim": int(sd["proj"].shape[1]),
        "hidden_act": "gelu",  # OpenCLIP ViT-H uses exact GELU, not OpenAI's quick_gelu
        "layer_norm_eps": 1e-5,
    }


def convert_clip(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out = {
        "vision_model.embeddings.patch_embedding.weight": sd["conv1.weight"],
        "vision_model.embeddings.class_embedding": sd["class_embedding"],
        "vision_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["ln_post.bias"],
        "visual_projection.weight": sd["proj"].t().contiguous(),
    }
    for i in range(config["num_hidden_layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[f"{dst}self_attn.{name}.weight"], out[f"{dst}self_attn.{name}.bias"] = w, b
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for old, new in pairs.items():
            out[f"{dst}{new}.weight"], out[f"{dst}{new}.bias"] = sd[f"{src}{old}.weight"], sd[f"{src}{old}.bias"]
    return out

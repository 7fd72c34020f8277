"""SV3D equivalence data from generative-models' own sgm modules (run by generate_reference.py).

Builds tiny sgm modules (VideoUNet, Encoder/Decoder, OpenCLIP VisionTransformer) with the
SV3D configs' structure, saves them as single-file checkpoints with sgm's key names
(``sv3d_{u,p}_tiny.safetensors``), then samples with sgm's Denoiser, EulerEDMSampler and
TrianglePredictionGuider from fixed inputs and noise. sgm's package ``__init__`` pulls in
training dependencies, so only the needed submodules are imported (see ``install_sgm``).
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SV3D_IMAGE = 256  # above CLIP's 224, so the antialiased resize is exercised
SV3D_STEPS = 3
SV3D_SEED = 7
CLIP_WIDTH, CLIP_HEADS, CONTEXT = 80, 1, 32
UNET_HEAD_DIM, CLIP_HEAD_DIM = 16, 80
SEEDS = {"sv3d_u": 1, "sv3d_p": 2}
CROP = slice(80, 176)  # the stored part of decoded frame 0


def sv3d_poses() -> list[tuple[float, float]]:
    """A dynamic orbit (what SV3D-p is for): elevation waving, azimuths jittered, input view last."""
    poses = []
    for i in range(21):
        azimuth = (360.0 * (i + 1) / 21 + (7.0 * math.sin(3 * i) if i < 20 else 0.0)) % 360.0
        elevation = 10.0 + (20.0 * math.sin(2 * math.pi * i / 21) if i < 20 else 0.0)
        poses.append((elevation, azimuth))
    return poses


def sv3d_inputs():
    rng = np.random.default_rng(321)
    yy, xx = np.mgrid[0:SV3D_IMAGE, 0:SV3D_IMAGE] / SV3D_IMAGE
    base = np.stack([np.sin(7 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), np.sin(11 * xx * yy)], -1)
    image = np.clip(127.5 + 100 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    noise = torch.from_numpy(rng.standard_normal((21, 4, SV3D_IMAGE // 8, SV3D_IMAGE // 8)).astype(np.float32))
    return image, noise


def install_sgm(sgm_root: Path) -> None:
    for name, sub in [("sgm", ""), ("sgm.modules", "modules"), ("sgm.modules.diffusionmodules", "modules/diffusionmodules"), ("sgm.modules.encoders", "modules/encoders"), ("sgm.models", "models")]:
        module = types.ModuleType(name)
        module.__path__ = [str(sgm_root / "sgm" / sub)]
        sys.modules[name] = module


def build_modules(adm: int):
    from open_clip.transformer import VisionTransformer
    from sgm.modules.diffusionmodules.model import Decoder, Encoder
    from sgm.modules.diffusionmodules.video_model import VideoUNet

    unet = VideoUNet(in_channels=8, model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=[1], channel_mult=[1, 1],
                     num_head_channels=UNET_HEAD_DIM, transformer_depth=1, context_dim=CONTEXT, use_linear_in_transformer=True, adm_in_channels=adm,
                     num_classes="sequential", spatial_transformer_attn_type="softmax", extra_ff_mix_layer=True, use_spatial_context=True,
                     merge_strategy="learned_with_images", video_kernel_size=[3, 1, 1])
    dd = dict(attn_type="vanilla", double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    ae = torch.nn.Module()
    ae.encoder, ae.decoder = Encoder(**dd), Decoder(**dd)
    ae.quant_conv, ae.post_quant_conv = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(4, 4, 1)
    first_stage = Decoder(**dd)
    visual = VisionTransformer(image_size=224, patch_size=16, width=CLIP_WIDTH, layers=1, heads=CLIP_HEADS, mlp_ratio=4.0, output_dim=CONTEXT)
    return unet, ae, first_stage, visual


def to_checkpoint(unet, ae, first_stage, visual) -> dict[str, torch.Tensor]:
    sd = {}
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    sd.update({f"conditioner.embedders.0.open_clip.model.visual.{k}": v for k, v in visual.state_dict().items()})
    # The text tower's leftovers stay in the published file (only `transformer` is deleted).
    text = {"positional_embedding": (77, 64), "text_projection": (64, CONTEXT), "token_embedding.weight": (100, 64), "ln_final.weight": (64,), "ln_final.bias": (64,), "logit_scale": ()}
    sd.update({f"conditioner.embedders.0.open_clip.model.{k}": torch.randn(s) for k, s in text.items()})
    sd.update({f"conditioner.embedders.1.encoder.{k}": v for k, v in ae.state_dict().items()})
    sd.update({f"first_stage_model.decoder.{k}": v for k, v in first_stage.state_dict().items()})
    return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def load_back(modules, checkpoint) -> None:
    unet, ae, first_stage, visual = modules
    for prefix, m in (("model.diffusion_model.", unet), ("conditioner.embedders.0.open_clip.model.visual.", visual),
                      ("conditioner.embedders.1.encoder.", ae), ("first_stage_model.decoder.", first_stage)):
        m.load_state_dict({k[len(prefix):]: v.float() for k, v in checkpoint.items() if k.startswith(prefix)})


def run_sv3d_reference(sgm_root: Path) -> None:
    import json
    import tempfile

    from safetensors.torch import load_file

    from tests.data.tiny_models import SV3D_MANIFEST, write_sv3d_checkpoint

    manifest = {}
    tmp = tempfile.mkdtemp()

    install_sgm(sgm_root)
    from einops import rearrange
    from sgm.modules.diffusionmodules.denoiser import Denoiser
    from sgm.modules.diffusionmodules.sampling import EulerEDMSampler
    from sgm.modules.diffusionmodules.wrappers import OpenAIWrapper
    from sgm.modules.encoders.modules import ConcatTimestepEmbedderND, FrozenOpenCLIPImageEmbedder

    image, noise = sv3d_inputs()
    poses = sv3d_poses()
    out = {"poses": np.array(poses), "steps": np.array(SV3D_STEPS), "seed": np.array(SV3D_SEED)}
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    for variant, adm in (("sv3d_u", 256), ("sv3d_p", 1280)):
        modules = build_modules(adm)
        layout = to_checkpoint(*modules)
        manifest[variant] = [[k, list(v.shape)] for k, v in layout.items()]
        SV3D_MANIFEST.write_text(json.dumps(manifest))
        path = write_sv3d_checkpoint(Path(tmp) / f"{variant}.safetensors", variant, seed=SEEDS[variant])
        checkpoint = load_file(str(path))
        load_back(modules, checkpoint)
        unet, ae, first_stage, visual = [m.eval() for m in modules]

        # CLIP: the embedder's own preprocess (kornia, antialiased), then the tower.
        fake = types.SimpleNamespace(antialias=True, mean=torch.tensor([0.48145466, 0.4578275, 0.40821073]), std=torch.tensor([0.26862954, 0.26130258, 0.27577711]))
        clip = visual(FrozenOpenCLIPImageEmbedder.preprocess(fake, pixels))  # (1, D)
        g = torch.Generator().manual_seed(SV3D_SEED)
        cond_frames = pixels + 1e-5 * torch.randn(pixels.shape, generator=g)
        moments = ae.quant_conv(ae.encoder(cond_frames))
        latent = moments.chunk(2, dim=1)[0]  # DiagonalGaussianRegularizer(sample=False): the mean
        if variant == "sv3d_p":
            polars = torch.tensor([np.deg2rad(90 - e) for e, _ in poses], dtype=torch.float32)
            azimuths = torch.tensor([np.deg2rad((a - poses[-1][1]) % 360) for _, a in poses], dtype=torch.float32)
        else:
            polars = azimuths = None
        vec = [ConcatTimestepEmbedderND(256)(torch.full((21,), 1e-5))]
        if polars is not None:
            vec += [ConcatTimestepEmbedderND(512)(polars), ConcatTimestepEmbedderND(512)(azimuths)]
        vector = torch.cat(vec, dim=1)
        c = {"crossattn": clip[:, None].repeat(21, 1, 1), "concat": latent.repeat(21, 1, 1, 1), "vector": vector}
        uc = {"crossattn": torch.zeros_like(c["crossattn"]), "concat": torch.zeros_like(c["concat"]), "vector": vector.clone()}
        sampler = EulerEDMSampler(
            discretization_config={"target": "sgm.modules.diffusionmodules.discretizer.EDMDiscretization", "params": {"sigma_max": 700.0}},
            guider_config={"target": "sgm.modules.diffusionmodules.guiders.TrianglePredictionGuider", "params": {"max_scale": 2.5, "num_frames": 21}},
            num_steps=SV3D_STEPS, device="cpu")
        denoiser = Denoiser({"target": "sgm.modules.diffusionmodules.denoiser_scaling.VScalingWithEDMcNoise"})
        model = OpenAIWrapper(unet)
        extra = {"image_only_indicator": torch.zeros(2, 21), "num_video_frames": 21}
        z = sampler(lambda x, s, cc: denoiser(model, x, s, cc, **extra), noise.clone(), cond=c, uc=uc)
        decoded = first_stage(z[:1] / 0.18215)
        out[f"{variant}_clip"] = clip.numpy()
        out[f"{variant}_image_latent"] = latent.numpy()
        out[f"{variant}_latents"] = z.numpy()
        out[f"{variant}_frame0"] = ((decoded + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()[CROP, CROP]
        print(variant, "latents std", float(z.std()), "frame0 std", float(out[f"{variant}_frame0"].std()))
    np.savez_compressed(HERE / "sv3d_expected.npz", **out)
    print("wrote", HERE / "sv3d_expected.npz")

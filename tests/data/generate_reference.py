"""Regenerate the equivalence data in tests/data from the *reference* implementations.

The reference code is not part of this repository: point this script at a checkout of it.

    python tests/data/generate_reference.py zero123 --community DIR   # DIR holds pipeline_zero1to3.py
    python tests/data/generate_reference.py sv3d --sgm DIR            # DIR is a generative-models checkout

Zero123's reference (diffusers examples/community/pipeline_zero1to3.py) needs kornia;
SV3D's (generative-models' sgm) needs einops, omegaconf and, for the CLIP tower, open_clip.
Install those in a throwaway environment, not in the project's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZERO123_DIR = HERE / "zero123_tiny"
ZERO123_EXPECTED = HERE / "zero123_expected.npz"

# One reference view and a batch of targets, (elevation, relative azimuth, radius).
REFERENCE_POSE = (15.0, 0.0, 2.0)
TARGET_POSES = [(15.0, 90.0, 2.0), (-10.0, 200.0, 1.8), (40.0, -30.0, 2.2)]
ZERO123_STEPS = 4
ZERO123_GUIDANCE = 3.0


def zero123_inputs():
    from tests.data.tiny_models import ZERO123_IMAGE

    rng = np.random.default_rng(123)
    image = rng.integers(0, 256, (ZERO123_IMAGE, ZERO123_IMAGE, 3), dtype=np.uint8)
    noise = torch.from_numpy(rng.standard_normal((len(TARGET_POSES), 4, ZERO123_IMAGE // 8, ZERO123_IMAGE // 8)).astype(np.float32))
    return image, noise


def run_zero123_reference(community: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    from tests.data.tiny_models import write_zero123_checkpoint

    sys.path.insert(0, str(community))
    from pipeline_zero1to3 import CCProjection, Zero1to3StableDiffusionPipeline  # the reference

    if not ZERO123_DIR.exists():
        write_zero123_checkpoint(ZERO123_DIR, "clip_camera_projection", seed=0, half=True)
    f32 = torch.float32
    unet = UNet2DConditionModel.from_pretrained(ZERO123_DIR, subfolder="unet", torch_dtype=f32)
    vae = AutoencoderKL.from_pretrained(ZERO123_DIR, subfolder="vae", torch_dtype=f32)
    clip = CLIPVisionModelWithProjection.from_pretrained(ZERO123_DIR / "image_encoder", torch_dtype=f32)
    scheduler = DDIMScheduler.from_pretrained(ZERO123_DIR, subfolder="scheduler")
    state = load_file(str(ZERO123_DIR / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    cc = CCProjection(in_channel=state["proj.weight"].shape[1], out_channel=state["proj.weight"].shape[0])
    cc.projection.load_state_dict({"weight": state["proj.weight"].float(), "bias": state["proj.bias"].float()})
    pipe = Zero1to3StableDiffusionPipeline(vae, clip, unet, scheduler, None, None, cc, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    image, noise = zero123_inputs()
    n = len(TARGET_POSES)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    pixels = pixels.expand(n, -1, -1, -1)
    e0, a0, r0 = REFERENCE_POSE
    outputs = {"image": image, "noise": noise.numpy()}
    # Zero123: the reference builds the vector itself from (d_polar deg, d_azimuth deg, d_radius).
    triples = [[(90.0 - e) - (90.0 - e0), a - a0, r - r0] for e, a, r in TARGET_POSES]
    # Stable Zero123: the 4th value is the input's absolute polar angle; pass ready vectors.
    stable = torch.tensor([[np.deg2rad((90.0 - e) - (90.0 - e0)), np.sin(np.deg2rad(a - a0)), np.cos(np.deg2rad(a - a0)), np.deg2rad(90.0 - e0)] for e, a, r in TARGET_POSES], dtype=torch.float32)
    for key, poses in (("zero123", triples), ("stable_zero123", stable)):
        result = pipe(
            input_imgs=pixels, prompt_imgs=pixels, poses=poses, num_inference_steps=ZERO123_STEPS,
            guidance_scale=ZERO123_GUIDANCE, latents=noise.clone(), output_type="numpy",
        ).images
        outputs[f"{key}_views"] = np.asarray(result, dtype=np.float32)
    outputs["reference_pose"] = np.array(REFERENCE_POSE)
    outputs["target_poses"] = np.array(TARGET_POSES)
    outputs["steps"] = np.array(ZERO123_STEPS)
    outputs["guidance"] = np.array(ZERO123_GUIDANCE)
    np.savez_compressed(ZERO123_EXPECTED, **outputs)
    print(f"wrote {ZERO123_EXPECTED}")


def _fake_torchvision() -> None:
    """open_clip imports torchvision at module level; its transforms are not used here.
    Without a torchvision build matching torch, stand in a module whose names all exist."""
    import importlib.abc
    import importlib.machinery
    import types

    class Meta(type):
        def __getattr__(cls, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return attr

    class Fake(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Meta(name, (object,), {"__init__": lambda self, *a, **k: None})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = Fake(spec.name)
            module.__path__, module.__version__ = [], "0.0.0"
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["zero123", "sv3d"])
    parser.add_argument("--community", type=Path, help="folder with diffusers' pipeline_zero1to3.py")
    parser.add_argument("--sgm", type=Path, help="a Stability-AI/generative-models checkout")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO.parent))
    sys.path.insert(0, str(REPO))
    torch.set_grad_enabled(False)
    if args.model == "zero123":
        run_zero123_reference(args.community)
    else:
        if "torchvision" not in sys.modules:  # open_clip imports it for its transforms only
            _fake_torchvision()
        from tests.data.sv3d_reference import run_sv3d_reference

        run_sv3d_reference(args.sgm)


if __name__ == "__main__":
    main()

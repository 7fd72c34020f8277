"""How much of a diffusion model sits on the GPU while it runs: three memory modes.

``full``      everything resident; classifier-free guidance as one doubled batch.
``balanced``  the conditional and unconditional passes one after the other (half the UNet
              activations), and the VAE decoding a few frames at a time (SV3D's
              ``decoding_t``).
``low``       as ``balanced``, decoding one frame at a time, plus model CPU offload (each
              component is moved to the GPU only while it runs, the one before it goes
              back to the CPU) and attention computed in slices of the batch.

Every mode computes the same images: only the batching and where weights wait differ
(the equivalence tests hold them to float tolerance).

The mode is chosen from the free GPU memory when a model loads (:func:`choose_memory_mode`)
unless ``BLEND123_MEMORY=full|balanced|low`` says otherwise. The thresholds
(:data:`BUDGETS`) are the free memory each mode is planned to need per model family, the
README's peak targets plus about 10% headroom; ``benchmarks/gpu_check.py`` measures the
actual peaks. Without a GPU the mode is ``full`` (system memory is not managed here) unless
the environment says otherwise; the CPU then still runs that mode's code paths.

Nothing here needs Accelerate: offload and attention slicing are plain torch hooks.
"""

from __future__ import annotations

import enum
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from blend123.protocol.errors import Blend123Error

ENV_VAR = "BLEND123_MEMORY"
GIB = 1 << 30


class MemoryMode(str, enum.Enum):
    FULL = "full"
    BALANCED = "balanced"
    LOW = "low"


@dataclass(frozen=True)
class MemoryBudget:
    """Free GPU memory (bytes) a model family is planned to need in ``full`` and ``balanced``;
    below ``balanced`` it runs ``low``."""

    full: int
    balanced: int


#: Planned needs per family. SV3D (21 frames at 576 px): peak targets 20 / 12 / 8 GB;
#: Zero123-XL (up to 8 views at 256 px): 6 GB in ``low``, its other modes far below SV3D's.
BUDGETS: dict[str, MemoryBudget] = {
    "sv3d": MemoryBudget(full=22 * GIB, balanced=13 * GIB),
    "zero123": MemoryBudget(full=10 * GIB, balanced=7 * GIB),
}


def parse_memory_env(env: Mapping[str, str] | None = None) -> MemoryMode | None:
    """The mode ``BLEND123_MEMORY`` asks for; None when unset, empty or ``auto``."""
    value = (os.environ if env is None else env).get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return None
    try:
        return MemoryMode(value)
    except ValueError:
        raise Blend123Error(
            f"{ENV_VAR}={value!r} is not a memory mode",
            f"set {ENV_VAR} to full, balanced or low (or unset it to choose from the free GPU memory)",
        ) from None


def choose_memory_mode(free_bytes: int | None, env: Mapping[str, str] | None = None, family: str = "sv3d") -> MemoryMode:
    """The mode a model of ``family`` runs in: the environment's choice, else by free GPU
    memory (``free_bytes`` None: no GPU, so ``full``)."""
    asked = parse_memory_env(env)
    if asked is not None:
        return asked
    if free_bytes is None:
        return MemoryMode.FULL
    budget = BUDGETS[family]
    if free_bytes >= budget.full:
        return MemoryMode.FULL
    if free_bytes >= budget.balanced:
        return MemoryMode.BALANCED
    return MemoryMode.LOW


def mode_is_from_env(env: Mapping[str, str] | None = None) -> bool:
    return parse_memory_env(env) is not None


@dataclass(frozen=True)
class MemoryPlan:
    """What a pipeline does differently in one mode."""

    mode: MemoryMode
    batched_cfg: bool  # one doubled batch for classifier-free guidance, else two passes
    decode_frames: int | None  # frames per VAE decode; None: the pipeline's own default
    cpu_offload: bool
    attention_slicing: bool

    @classmethod
    def for_mode(cls, mode: MemoryMode | str) -> "MemoryPlan":
        mode = MemoryMode(mode)
        if mode is MemoryMode.FULL:
            return cls(mode, batched_cfg=True, decode_frames=None, cpu_offload=False, attention_slicing=False)
        if mode is MemoryMode.BALANCED:
            return cls(mode, batched_cfg=False, decode_frames=2, cpu_offload=False, attention_slicing=False)
        return cls(mode, batched_cfg=False, decode_frames=1, cpu_offload=True, attention_slicing=True)


FULL_PLAN = MemoryPlan.for_mode(MemoryMode.FULL)

#: Attention slicing: the most bytes one slice's attention scores may take (batch slice x
#: heads x queries x keys). Layers under it run unsliced (SV3D's temporal attention).
ATTENTION_SLICE_BYTES = 256 << 20


# --- attention slicing ---------------------------------------------------------------------


class SlicedAttention:
    """A diffusers attention processor that runs another one on slices of the batch.

    Attention never mixes batch entries, so the result is the unsliced one (to float
    rounding); the scores of at most ``max_bytes`` exist at once, whichever kernel runs.
    """

    def __init__(self, inner, max_bytes: int = ATTENTION_SLICE_BYTES) -> None:
        self.inner = inner
        self.max_bytes = int(max_bytes)
        self.sliced_calls = 0  # calls that were split (for tests and logs)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        batch = hidden_states.shape[0]
        queries = math.prod(hidden_states.shape[2:]) if hidden_states.ndim == 4 else hidden_states.shape[1]
        keys = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else queries
        per_item = max(1, int(attn.heads) * queries * keys * hidden_states.element_size())
        size = max(1, self.max_bytes // per_item)
        if size >= batch:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        self.sliced_calls += 1

        def part(x, lo):
            return x[lo : lo + size] if x is not None and x.ndim and x.shape[0] == batch else x

        outs = [
            self.inner(attn, hidden_states[lo : lo + size], part(encoder_hidden_states, lo), part(attention_mask, lo), part(temb, lo), *args, **kwargs)
            for lo in range(0, batch, size)
        ]
        import torch

        return torch.cat(outs)


# --- model CPU offload ---------------------------------------------------------------------


class ModelOffload:
    """Components wait on ``offload_device``; each moves to ``execution_device`` when it is
    called (``forward``, or a VAE's ``encode``/``decode``) and the previous one moves back,
    so one component at a time occupies the GPU."""

    def __init__(self, pipe, names: list[str], execution_device, offload_device="cpu") -> None:
        import torch

        self.pipe = pipe
        self.names = [n for n in names if isinstance(getattr(pipe, n, None), torch.nn.Module)]
        self.execution_device = torch.device(execution_device)
        self.offload_device = torch.device(offload_device)
        self.resident: str | None = None
        self.moves: deque[str] = deque(maxlen=64)  # components brought in, in order
        self._handles = []
        self._wrapped: list[tuple[object, str]] = []
        for name in self.names:
            module = getattr(pipe, name)
            module.to(self.offload_device)
            self._handles.append(module.register_forward_pre_hook(lambda _m, _a, name=name: self.bring(name)))
            for method in ("encode", "decode"):
                bound = getattr(module, method, None)
                if callable(bound):
                    setattr(module, method, self._wrap(name, bound))
                    self._wrapped.append((module, method))

    def _wrap(self, name: str, bound):
        def call(*args, **kwargs):
            self.bring(name)
            return bound(*args, **kwargs)

        return call

    def bring(self, name: str) -> None:
        if self.resident == name:
            return
        if self.resident is not None:
            getattr(self.pipe, self.resident).to(self.offload_device)
        getattr(self.pipe, name).to(self.execution_device)
        self.resident = name
        self.moves.append(name)

    def remove(self) -> None:
        """Hooks off, every component back on the execution device."""
        for handle in self._handles:
            handle.remove()
        for module, method in self._wrapped:
            module.__dict__.pop(method, None)
        self._handles, self._wrapped = [], []
        for name in self.names:
            getattr(self.pipe, name).to(self.execution_device)
        self.resident = None


# --- applying a mode to a pipeline ---------------------------------------------------------


class MemoryManaged:
    """Mixin for the pipelines: ``memory_plan`` (default ``full``), and the execution device
    the offload hooks run on (components themselves may be waiting on the CPU)."""

    memory_plan: MemoryPlan = FULL_PLAN
    offload: ModelOffload | None = None

    @property
    def _execution_device(self):
        if self.offload is not None:
            return self.offload.execution_device
        return super()._execution_device  # type: ignore[misc]


def apply_memory_mode(pipe, mode: MemoryMode | str, device, attention_slice_bytes: int = ATTENTION_SLICE_BYTES) -> MemoryPlan:
    """Set ``pipe`` up for ``mode`` on ``device`` (undoing any earlier mode first)."""
    plan = MemoryPlan.for_mode(mode)
    if pipe.offload is not None:
        pipe.offload.remove()
        pipe.offload = None
    unet = pipe.unet
    saved = getattr(pipe, "_unsliced_processors", None)
    if saved is not None:
        unet.set_attn_processor(saved)
        pipe._unsliced_processors = None
    if plan.attention_slicing:
        processors = dict(unet.attn_processors)
        pipe._unsliced_processors = processors
        unet.set_attn_processor({k: SlicedAttention(p, attention_slice_bytes) for k, p in processors.items()})
    if plan.cpu_offload:
        names = [n for n in pipe.model_cpu_offload_seq.split("->")]
        pipe.offload = ModelOffload(pipe, names, device)
    pipe.memory_plan = plan
    return plan


def sliced_attention_calls(pipe) -> int:
    """How many attention calls ran in slices since the mode was applied."""
    return sum(p.sliced_calls for p in pipe.unet.attn_processors.values() if isinstance(p, SlicedAttention))


# --- reporting (hello, doctor, the panel) ------------------------------------------------


def gpu_free_bytes() -> int | None:
    """Free memory on the current CUDA device, or None without one (no torch import)."""
    from ..device import describe_device

    device = describe_device()
    return device.free_bytes if device.kind == "cuda" else None


def mode_now(family: str, free_bytes: int | None = None, env: Mapping[str, str] | None = None) -> str:
    """The mode a model of ``family`` would load in now; "" when ``BLEND123_MEMORY`` is
    invalid (loading then fails with the fix; ``doctor`` shows it)."""
    try:
        return choose_memory_mode(free_bytes, env, family).value
    except Blend123Error:
        return ""

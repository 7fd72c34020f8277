"""Where model weights live: a local path, the models folder, or the Hugging Face cache.

Nothing here downloads. A model is found, in this order, at:

1. ``$BLEND123_MODEL_<NAME>`` (e.g. ``BLEND123_MODEL_ZERO123_XL``): a folder in diffusers
   layout, or for SV3D the ``.safetensors`` file itself (or a folder holding it);
2. ``<models folder>/<name>``, the models folder being ``$BLEND123_MODELS_DIR`` or the
   per-user data folder (``blend123 doctor`` prints it);
3. the local Hugging Face cache (``$HF_HOME`` / ``$HF_HUB_CACHE``) for each known repo id,
   read from the cache's folder layout: no huggingface_hub call, so no network access
   at all (not even a DNS look-up), whatever ``HF_HUB_OFFLINE`` says.

When none is found, :func:`missing_hint` says exactly what to download and where to put it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Subfolders every diffusers-layout Zero123 checkpoint has (the projection is checked apart).
ZERO123_SUBFOLDERS = ("unet", "vae", "image_encoder", "scheduler")
#: The two published names of Zero123's pose projection (folder, parameter prefix).
ZERO123_PROJECTIONS = (("clip_camera_projection", "proj"), ("cc_projection", "projection"))


@dataclass(frozen=True)
class WeightsSource:
    """How one model's weights are published."""

    name: str  # the model name in the registry, e.g. "zero123-xl"
    repo_ids: tuple[str, ...]  # Hugging Face repos, most common first
    filename: str = ""  # single-file checkpoints (SV3D); "" for a diffusers folder
    size_hint: str = ""  # download size, for the hint
    extra: dict = field(default_factory=dict)

    @property
    def env_var(self) -> str:
        return "BLEND123_MODEL_" + self.name.upper().replace("-", "_")


def models_dir() -> Path:
    """The folder where ``<models folder>/<name>`` is looked up."""
    configured = os.environ.get("BLEND123_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("blend123")) / "models"


def is_zero123_folder(path: Path) -> bool:
    if not path.is_dir() or not all((path / sub).is_dir() for sub in ZERO123_SUBFOLDERS):
        return False
    return any((path / folder).is_dir() for folder, _ in ZERO123_PROJECTIONS)


def _single_file_in(path: Path, filename: str) -> Path | None:
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir() and (path / filename).is_file():
        return path / filename
    return None


def _check_local(source: WeightsSource, path: Path) -> Path | None:
    if source.filename:
        return _single_file_in(path, source.filename)
    return path if is_zero123_folder(path) else None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is *now*.

    The same order as huggingface_hub's own constants, which it reads once at import:
    ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cached_snapshots(repo_id: str) -> list[Path]:
    """The snapshot folders of a model repo in the local hub cache, ``refs/main`` first.

    Read straight from the cache's documented layout (``models--ORG--NAME/refs/main``,
    ``snapshots/<revision>/``): huggingface_hub's download functions resolve DNS even
    with ``local_files_only=True``, and a weights lookup must never touch the network.
    """
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        found = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:  # not cached (or unreadable): nothing here
        return []
    main: Path | None = None
    try:
        main = snapshots / (repo / "refs" / "main").read_text().strip()
    except OSError:
        pass
    # The revision main points at first, then the newest other snapshot.
    return sorted(found, key=lambda p: (p != main, -p.stat().st_mtime))


def _from_hf_cache(source: WeightsSource) -> Path | None:
    for repo_id in source.repo_ids:
        for snapshot in cached_snapshots(repo_id):
            checked = _check_local(source, snapshot)
            if checked is not None:
                return checked
    return None


def download_command(repo_id: str, filename: str = "", target: Path | None = None) -> str:
    """The download command of the current huggingface_hub CLI (``hf``; ``huggingface-cli`` is gone)."""
    parts = ["hf", "download", repo_id] + ([filename] if filename else []) + ([f"--local-dir {target}"] if target else [])
    return " ".join(parts)


def locate(source: WeightsSource) -> Path | None:
    """The local weights of ``source`` (folder or file), or None. Never downloads."""
    configured = os.environ.get(source.env_var)
    if configured:
        # An explicit setting wins, even when wrong: the hint then names that path.
        return _check_local(source, Path(configured).expanduser())
    local = _check_local(source, models_dir() / source.name)
    if local is not None:
        return local
    return _from_hf_cache(source)


def resolve(path_or_repo_id: str | os.PathLike, filename: str = "") -> Path:
    """A local path as is, or a Hugging Face repo id resolved in the local cache only."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_repo_id)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"no model at '{text}'")
    for snapshot in cached_snapshots(text):
        if not filename:
            return snapshot
        if (snapshot / filename).is_file():
            return snapshot / filename
    raise FileNotFoundError(
        f"'{text}' is not a local path and is not in the Hugging Face cache; "
        f"download it first: {download_command(text, filename)}"
    )


def missing_hint(source: WeightsSource) -> str:
    """'' when the model is installed, otherwise the exact download and where it goes."""
    if locate(source) is not None:
        return ""
    configured = os.environ.get(source.env_var)
    target = models_dir() / source.name
    repo = source.repo_ids[0]
    size = f" (~{source.size_hint})" if source.size_hint else ""
    if source.filename:
        what = f"{source.filename} from https://huggingface.co/{repo}{size}"
        command = download_command(repo, source.filename, target)
        where = f"{target / source.filename}"
    else:
        what = f"the diffusers-layout repo https://huggingface.co/{repo}{size}"
        command = download_command(repo, "", target)
        where = f"{target}/ (with unet/, vae/, image_encoder/, scheduler/ and clip_camera_projection/ or cc_projection/)"
    prefix = f"{source.env_var}={configured} does not hold the weights. " if configured else ""
    return (
        f"{prefix}Download {what}: `{command}` (accept the model licence on Hugging Face first if asked), "
        f"so that it is at {where}; or set {source.env_var} to where the weights are, "
        f"or keep them in the Hugging Face cache."
    )

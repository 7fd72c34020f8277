"""Maps the repository's top-level folders onto the installed `blend123` namespace.

`protocol/` installs as `blend123.protocol` and `backend/` as `blend123.backend`, so no
generic top-level name ever lands in site-packages. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {"blend123.protocol": "protocol", "blend123.backend": "backend"}


def _packages() -> list[str]:
    names = []
    for prefix, folder in FOLDERS.items():
        names.append(prefix)
        names += [f"{prefix}.{sub}" for sub in find_packages(folder)]
    return names


setup(
    packages=_packages(),
    package_dir=dict(FOLDERS),
    package_data={"blend123.backend": ["py.typed"], "blend123.protocol": ["py.typed"]},
)

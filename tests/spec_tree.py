"""Build workspace file trees for tests, in the style of copier's ``tests/helpers.py::build_file_tree``."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path


def build_file_tree(root: Path, spec: Mapping[str, str | bytes]) -> Path:
    """Write ``{relative path: content}`` under ``root``; str content is dedented. Returns ``root``."""
    for name, content in spec.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


def workspace(root: Path, files: Mapping[str, str | bytes], *, config: str | None = None) -> Path:
    """A workspace: ``files`` plus an ``invoicesync.toml`` (empty unless ``config`` is given)."""
    build_file_tree(root, {"invoicesync.toml": config or "", **files})
    return root

"""The bounds every spec input is held to: file size, nesting, values, render time, format widths.

Spec files are untrusted input (a pull request's specs are planned on CI): these bounds keep one
from exhausting a runner's memory or time.
"""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "MAX_FORMAT_WIDTH", "MAX_NODES", "MAX_RENDER_SECONDS", "MAX_SPEC_BYTES"]

#: Largest spec file, and largest rendered template output, in bytes.
MAX_SPEC_BYTES = 16 * 1024 * 1024
#: Deepest nesting of mappings and sequences in a YAML document.
MAX_DEPTH = 64
#: How long one template may take to render (seconds), so a runaway loop cannot hold a CI runner.
MAX_RENDER_SECONDS = 20.0
#: Most values in one YAML document, counting every alias expansion (billion-laughs guard).
MAX_NODES = 2_000_000
#: Widest field, and longest precision, a template's format spec (``'{:>8}'``) or ``%`` conversion
#: (``'%-8s'``) may ask for: padding is for lining text up, never for making it large.
MAX_FORMAT_WIDTH = 10_000

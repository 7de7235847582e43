"""Spec files: from the files under ``specs/`` to validated, located ``DesiredInvoice`` values.

    loader.py     finding the files, defaults, lifecycle, derived fields, validation, uniqueness, locations
    template.py   the sandboxed Jinja2 environment of ``*.j2`` specs, every allocation bounded
    yaml.py       safe, located, bounded YAML; numbers read as written
    variables.py  ``--var``, var files and how template variables merge
    limits.py     the bounds every spec input is held to

Lines: YAML problems of a ``*.j2`` file are located at the line of its *rendered* output (as Helm
does), template syntax and runtime errors at the template's own line. Errors of yaml, jinja2 and
pydantic are translated here and never reach the user raw. Never reads state and never calls the API.
"""

from __future__ import annotations

from invoicesync.specs.limits import MAX_DEPTH, MAX_FORMAT_WIDTH, MAX_NODES, MAX_SPEC_BYTES
from invoicesync.specs.loader import SpecSet, load_specs
from invoicesync.specs.template import spec_template_env
from invoicesync.specs.variables import parse_cli_var

__all__ = [
    "MAX_DEPTH",
    "MAX_FORMAT_WIDTH",
    "MAX_NODES",
    "MAX_SPEC_BYTES",
    "SpecSet",
    "load_specs",
    "parse_cli_var",
    "spec_template_env",
]

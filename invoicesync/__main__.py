"""`python -m invoicesync` runs the CLI."""

from invoicesync.cli import main

raise SystemExit(main())

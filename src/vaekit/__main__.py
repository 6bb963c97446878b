"""`python -m vaekit` (and `torchrun -m vaekit`) run the CLI."""

from .cli import main

raise SystemExit(main())

"""``python -m contrastkit`` runs the command-line interface."""

from contrastkit.cli import main

raise SystemExit(main())

"""``python -m layerstore``: the same as the ``layerstore`` command."""

from .cli import main

raise SystemExit(main())

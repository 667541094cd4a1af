"""``python -m service``: ``serve`` starts the HTTP service; ``segment`` runs local batches without HTTP."""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())

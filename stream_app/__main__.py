"""``python -m stream_app`` is ``stream-app``."""

from __future__ import annotations

import sys

from stream_app.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Makes the project's package importable in its tests (pytest from any directory)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

"""Makes the CLI tests' helper module (``cli_toys``) importable and shares its fixture."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cli_toys import init_net_recipe  # noqa: E402, F401  (the fixture, for every CLI test)

"""``python -m tavt_kit.cli``: the ``fgvc-kit`` command (for ``torchrun ... -m tavt_kit.cli train``)."""
import sys

from . import main

sys.exit(main())

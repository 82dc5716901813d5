"""``python -m torch_acdc.cli`` / ``torchrun -m torch_acdc.cli``: the ``acdc`` command."""
import sys

from . import main

sys.exit(main())

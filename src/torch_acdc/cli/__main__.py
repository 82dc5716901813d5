"""``python -m torch_acdc.cli`` / ``torchrun -m torch_acdc.cli``: the ``acdc`` command."""
from . import console_main

console_main()

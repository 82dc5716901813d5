import os

import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The busy-machine hint depends on the load of the machine running the tests, not on the code under test; the
# tests that check it call torch_acdc.cli.common.oversubscription_hint directly.
os.environ["ACDC_NO_BUSY_HINT"] = "1"

"""Suite-wide settings: one torch thread (the tests use tiny tensors, where a second thread only adds
synchronisation, and on a loaded 2-core machine oversubscribed threads slow every test down)."""

import torch

torch.set_num_threads(1)

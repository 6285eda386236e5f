import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_flush_denormal(True)  # without it, CPU backward matmuls can run ~40x slower
torch.set_num_threads(min(2, os.cpu_count() or 1))

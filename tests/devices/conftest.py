"""Settings of the device tests (``make test-gpu``), applied before any of them runs.

cuBLAS is deterministic only with a fixed workspace configuration, which it reads when CUDA
creates its first handle: set it here, at collection, before any test runs a matrix product.
"""

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

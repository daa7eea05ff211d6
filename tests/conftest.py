"""Suite-wide settings, applied before any test module imports torch."""

import os

# On a machine shared with other jobs, spinning OpenMP threads made small torch and
# scikit-learn steps 3-9x slower (measured: an in-process `run` test took 102 s with the
# default policy, 32 s with PASSIVE). The CLI sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

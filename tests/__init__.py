"""The test suite.

Native thread pools (OpenMP, OpenBLAS) get one thread per test process, set here before
numpy or scikit-learn load them: pytest-xdist already runs one process per core, and
OpenMP's busy-waiting threads fighting the other processes for the cores made small
scikit-learn fits up to ten times slower (gradient boosting: 7.5 s against 0.6 s for a
5-fold cross-validation on 240 rows, on 2 loaded cores). A value set in the environment
wins.
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

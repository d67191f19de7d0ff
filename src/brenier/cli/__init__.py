"""The ``brenier`` command line: semi-discrete optimal transport and AEOT from the shell.

Commands (one module each, over the shared helpers of ``_common``)
-----------------------------------------------------------------
``brenier ot TARGETS --out DIR``   (``ot``) fit the OT map from a source measure onto the points in
                                   a .npy/.npz file and save the model, heights and a summary.
``brenier demo``                   (``fit``) the main job: fit AEOT (autoencoder + latent OT +
                                   boundary-aware sampler) on the bundled digits, sample, evaluate,
                                   write report.html + metrics.json + PNGs.
``brenier fit / sample / report``  (``fit``, ``sample``, ``report``) the same in steps.
``brenier dimension``              (``dimension``) intrinsic dimension estimates.
``brenier compare``                (``compare``) OT against the baselines on the same codes.
``brenier critical``               (``critical``) critical frames of a process.
``brenier figure seahorse | toy``  (``figure``) the singular-set figures.

Exit status: 0 done; 1 an output could not be written; 2 a user error (a bad or corrupt input
file or run folder, an impossible option) printed as one red line naming the file, without a
traceback; 3 a fit stopped short of its tolerance (``brenier.ConvergenceWarning``: printed as one
warning line, the outputs are still written; ``--allow-unconverged`` exits 0); 130 interrupted.
"""

from __future__ import annotations

from ._common import EXIT_INTERRUPTED, EXIT_UNCONVERGED, EXIT_USAGE, app, load_targets

# importing a command's module registers it on ``app`` (in this order in ``brenier --help``)
from . import ot, fit, sample, report, dimension, compare, critical, figure  # noqa: E402,F401  isort: skip

__all__ = ["app", "load_targets", "EXIT_USAGE", "EXIT_UNCONVERGED", "EXIT_INTERRUPTED"]

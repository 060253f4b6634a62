"""alta-hf: ALTA (ALign Through Adapting) for chest radiographs and radiology reports, on the Hugging Face stack.

Every part is imported through this one name, in a checkout and in an installed wheel alike, so that the install
adds no generic top-level module (`training`, `evaluation`, `processing`, ...) to a user's environment:

    from alta_hf.modeling_alta import AltaModel
    from alta_hf.processing import AltaProcessor
    python -m alta_hf.training.demo            (or the console command `alta-demo`)

In a wheel the packages are inside this folder. In a checkout they keep the repository's layout (`modeling_alta/`,
`processing/`, `dataset_scripts/`, `training/`, `evaluation/` at the top) and this package's path is extended to the
repository root. `modeling_alta` and `processing` use relative imports only, so they also work flat, as the remote
code of a saved model folder.
"""

import os

_here = os.path.dirname(os.path.abspath(__file__))
_checkout_root = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "modeling_alta")) and os.path.isdir(
    os.path.join(_checkout_root, "modeling_alta")
):
    __path__.append(_checkout_root)

__version__ = "0.1.0"

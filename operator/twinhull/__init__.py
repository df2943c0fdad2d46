"""twinhull: a Kubernetes operator for resilient, active-active large-model serving.

The public surface is small: the API models (:mod:`twinhull.api`), the tier policy
(:mod:`twinhull.policy`), the offline validator (:mod:`twinhull.validation`) and the
exception tree (:mod:`twinhull.errors`).
"""

from twinhull.errors import ManifestError, PolicyError, TwinhullError, UnknownTierError

__version__ = "0.2.0"

__all__ = ["ManifestError", "PolicyError", "TwinhullError", "UnknownTierError", "__version__"]

"""The twinhull exception tree. Every error twinhull raises on purpose derives from
:class:`TwinhullError`; each says what is wrong and how to fix it."""

from __future__ import annotations


class TwinhullError(Exception):
    """Base of every twinhull error."""


class PolicyError(TwinhullError):
    """The tier policy file is unreadable or invalid. Fix the file; nothing was loaded."""


class UnknownTierError(TwinhullError):
    """A ModelDeployment names a tier the policy does not define."""

    def __init__(self, tier: str, known: list[str]) -> None:
        self.tier = tier
        self.known = known
        super().__init__(
            f"slaTier {tier!r} is not defined by the tier policy; use one of "
            f"{', '.join(known) or '(none)'} or add the tier to the policy file"
        )


class ManifestError(TwinhullError):
    """An input file cannot be read or parsed as YAML."""


class InstallError(TwinhullError):
    """What is installed in the cluster does not fit this version of the operator (CRDs
    older than the code). Nothing was started; the message names the fix."""

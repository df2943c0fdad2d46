"""The kopf handlers of the operator (imported for their registration) and ``run``."""

from twinhull.handlers import deployments, drills, members, operator, revisions
from twinhull.handlers.run import run

__all__ = ["deployments", "drills", "members", "operator", "revisions", "run"]

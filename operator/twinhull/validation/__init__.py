"""Offline validation of twinhull manifests (``twinhull validate``)."""

from twinhull.validation.checker import Problem, Report, check_documents
from twinhull.validation.documents import Document, parse_text, read_paths

__all__ = ["Document", "Problem", "Report", "check_documents", "parse_text", "read_paths"]

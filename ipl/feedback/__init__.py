"""Adoption feedback: drafts, what sellers published, and the report on it (paper Sec. 5.5)."""

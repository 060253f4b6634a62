"""Local `evaluate` module folder (see the module file of the same name)."""

__all__ = []

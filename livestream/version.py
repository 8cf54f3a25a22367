"""The version of livestream: written here only (pyproject.toml and the package read it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"

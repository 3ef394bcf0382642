"""Every test here closes the figures it drew."""

from .axes import close_figures  # noqa: F401  (a fixture: pytest finds it by its name here)

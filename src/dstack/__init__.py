"""dstack: ML workflows from your Git repository, run locally or on remote runners."""

__version__ = "0.1.0"

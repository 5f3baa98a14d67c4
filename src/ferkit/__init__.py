"""ferkit: facial expression recognition — train, ship and run FER models.

The top-level package stays light: importing it never pulls in torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""ferkit: facial expression recognition — train, ship and run FER models.

The top-level package stays light: importing it never pulls in torch. `ferkit.analyze` and
`ferkit.FacialExpressionModel` load the run time (numpy, OpenCV, onnxruntime) on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "FacialExpressionModel"]


def __getattr__(name: str):
    if name in ("analyze", "FacialExpressionModel"):
        from ferkit import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")

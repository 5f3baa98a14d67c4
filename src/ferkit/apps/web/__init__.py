"""`ferkit serve`: the web app and JSON API (FastAPI + uvicorn; `pip install 'ferkit[serve]'`).

`create_app` and `Settings` load on first use, so the video worker process (`ferkit.apps.web.worker`)
starts without the web stack.
"""

__all__ = ["create_app", "Settings"]


def __getattr__(name: str):
    if name == "create_app":
        from ferkit.apps.web.app import create_app

        return create_app
    if name == "Settings":
        from ferkit.apps.web.settings import Settings

        return Settings
    raise AttributeError(f"module 'ferkit.apps.web' has no attribute {name!r}")

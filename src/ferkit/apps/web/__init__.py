"""`ferkit serve`: the web app and JSON API (FastAPI + uvicorn; `pip install 'ferkit[serve]'`)."""

from ferkit.apps.web.app import create_app
from ferkit.apps.web.settings import Settings

__all__ = ["create_app", "Settings"]

"""The operator dashboard: pages, static ES modules and the route that serves them.

``from cloud.dashboard import router`` gives the FastAPI router to include in the API app.
"""

from cloud.dashboard.router import router

__all__ = ["router"]

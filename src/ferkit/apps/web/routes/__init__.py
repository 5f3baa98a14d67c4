"""The app's routes, one module per resource: `meta` (page, docs, health, model, limits), `images`
(/predict), `videos` (jobs and their files), `streams` (MJPEG), `live` (the WebSocket)."""

"""`--serve`: the browser preview (live annotated MJPEG per stream), /api/status and Prometheus /metrics.

The server runs its own asyncio loop in a thread (stream.web.server); the render loop only hands it the
newest annotated frame of each stream (stream.web.preview) and the stats snapshot it already makes for
the dashboard, so no viewer can hold the pipeline up. stream.web.guard stands between the listening socket
and the routes: the Host allow-list, the token, the connection cap and timeouts.
"""

"""`--engine ray`: the same stages run on a Ray cluster.

The classifier is a Ray Serve deployment (`deployment`) that batches single-frame requests from every
stream with `@serve.batch`; each stream is a Ray actor (`stream_actor`) that runs the local engine's
capture, mux, render and sinks next to its source and sends the model only its 224×224 uint8 input
(`remote_inference`); the driver (`engine`) deploys, starts the actors, replays their statistics
into the project's own collectors for the dashboard and the report, and tears everything down.
"""

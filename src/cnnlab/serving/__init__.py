"""``cnnlab serve``: a trained model behind an HTTP API and a web page (FastAPI + uvicorn).

``settings`` holds the limits and defaults (light, for the CLI's help); ``uploads`` turns a
request into decoded images, refusing bad input with 4xx JSON; ``batcher`` groups concurrent
requests into one inference call off the event loop; ``app`` wires the routes; ``server`` opens
the model, binds the socket and runs uvicorn until Ctrl-C / SIGTERM.
"""

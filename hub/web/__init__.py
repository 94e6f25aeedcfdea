"""The operator review page: incidents on a map with their audio, reviews, sensor health.

:func:`shotline.hub.web.server.start_web` serves it beside the hub; see
docs/operator-guide.md. Needs the ``web`` extra (FastAPI, uvicorn,
python-multipart, argon2-cffi).
"""

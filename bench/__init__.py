"""A side-by-side benchmark of llmrelay against raw aiohttp, the ``openai`` SDK and ``g4f``.

Run it with ``python -m bench`` (``--quick`` for a smoke run); see ``bench/README.md``.
"""

"""`vaekit explore RUN`: a latent explorer in the browser, served by the standard library.

One slider per latent dimension (the most active first) drives the decoder; a button
encodes a random test image into the sliders; a strip interpolates between two images.
`latents.py` is the model side, `server.py` the HTTP handler, `limits.py` what a client
may cost (connection slots, a deadline per request, a checked head), and the page is the
template templates/explorer.html.
"""

from .latents import Explorer
from .server import ExplorerServer, make_server, serve

__all__ = ["Explorer", "ExplorerServer", "make_server", "serve"]

"""Serving trained runs over HTTP: predictions, segmentation masks and attention heat maps, with a web page.

::

    from visionfm.serve import ServeConfig, start_server
    srv = start_server(ServeConfig(runs=["runs/dr"], port=0))   # uvicorn in a background thread
    print(srv.url)                                              # POST {url}v1/predict with file=@image.png
    srv.stop()

``visionfm serve --run RUN`` runs the same in the foreground. Concurrent requests are batched dynamically
(:mod:`visionfm.serve.batching`); uploads are checked before decoding (:mod:`visionfm.serve.uploads`).
"""

from .batching import DynamicBatcher, Overloaded
from .config import API_KEY_ENV, API_KEY_HEADER, BACKENDS, ServeConfig
from .models import ServedModel, load_served
from .server import RunningServer, build_app, serve, start_server
from .uploads import Upload, UploadError, decode_upload, decode_volume_upload, stack_bscans

__all__ = [
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "BACKENDS",
    "DynamicBatcher",
    "Overloaded",
    "RunningServer",
    "ServeConfig",
    "ServedModel",
    "Upload",
    "UploadError",
    "build_app",
    "decode_upload",
    "decode_volume_upload",
    "load_served",
    "serve",
    "stack_bscans",
    "start_server",
]

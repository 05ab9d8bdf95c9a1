"""``python slow_serve.py SECONDS serve RUN ...``: ``cnnlab serve`` whose model sleeps SECONDS per call.

A deliberately slow model for the back-pressure tests: it holds requests the way a big model would,
without burning the shared CPU. Only the tests use it; the server itself has no such switch.
"""

from __future__ import annotations

import sys
import time

from cnnlab.cli.main import main
from cnnlab.serving.model import ServedModel

if __name__ == "__main__":
    delay = float(sys.argv[1])
    infer = ServedModel.infer

    def slow_infer(self: ServedModel, images):
        time.sleep(delay)
        return infer(self, images)

    ServedModel.infer = slow_infer
    sys.exit(main(sys.argv[2:]))

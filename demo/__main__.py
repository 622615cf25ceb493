"""`python -m demo`: the Gradio demo on the weights this repository ships (weights/demo), downloading nothing.

Extra flags go to demo.app (e.g. `python -m demo --port 7861`). To train those weights yourself: demo/pipeline.py.
"""
from __future__ import annotations

import sys

from .app import main
from .release import DEFAULT_RELEASE

if __name__ == "__main__":
    raise SystemExit(main(["--release", str(DEFAULT_RELEASE), *sys.argv[1:]]))

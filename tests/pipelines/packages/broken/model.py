"""A step whose process dies on start: the run must fail and name it."""

import sys

sys.exit("model weights missing")

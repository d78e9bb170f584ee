"""python -m zmqgrid: the same command line as main.py."""
import sys

from .cli import main

sys.exit(main())

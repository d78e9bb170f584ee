"""zmqgrid command line: python main.py --help"""
import sys

from zmqgrid.cli import main

if __name__ == "__main__":
    sys.exit(main())

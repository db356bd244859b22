"""``python -m rlcompress`` runs the command-line interface."""

from rlcompress.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

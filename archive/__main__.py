"""``python -m archive``: see ``archive.cli``."""

from archive.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

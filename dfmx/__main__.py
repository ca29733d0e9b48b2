"""``python -m dfmx`` runs the Hydra application."""

from dfmx.cli.app import main

if __name__ == "__main__":
    main()

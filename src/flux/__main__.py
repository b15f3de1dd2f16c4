"""`python -m flux …` runs the `flux` command line."""

from flux.cli import main

if __name__ == "__main__":
    main()

"""`python -m glomssl` runs the command-line interface."""

from glomssl.cli import main

if __name__ == "__main__":
    main()

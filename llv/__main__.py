"""``python -m llv`` (and ``torchrun -m llv``) runs the command-line interface."""

from llv.cli import main

if __name__ == "__main__":
    main()

"""``python -m brenier`` (and ``torchrun -m brenier``): the ``brenier`` command line."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="brenier")

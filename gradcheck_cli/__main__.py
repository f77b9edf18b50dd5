"""``python -m gradcheck_cli`` is the same as the ``gradcheck`` command."""

from .cli import entry

if __name__ == "__main__":
    entry()

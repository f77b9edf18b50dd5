"""``python -m gradcheck_cli`` is the same as the ``gradcheck`` command."""

from .entry import main

if __name__ == "__main__":
    main()

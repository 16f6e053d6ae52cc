"""``python -m recbole_kd``: the command line of recbole_kd/cli.py."""

from recbole_kd.cli import main

if __name__ == "__main__":
    main(prog="python -m recbole_kd")

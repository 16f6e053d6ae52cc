"""recbole_kd's command line, in the style of RecBole's run_recbole.py (see recbole_kd/cli.py):

    python run_recbole_kd.py -m RRD -d ml-100k --config_files lightgcn-bpr

Installed, the same command is ``recbole-kd`` and ``python -m recbole_kd``.
"""

from recbole_kd.cli import main, names  # noqa: F401  (names: the tests' import)

if __name__ == "__main__":
    main()

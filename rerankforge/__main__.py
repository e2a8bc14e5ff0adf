"""``python -m rerankforge``: the CLI, also what ``torchrun -m rerankforge build ...`` runs on every rank."""

from rerankforge.cli.main import main

if __name__ == "__main__":
    main()

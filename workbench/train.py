"""`python -m workbench.train [overrides]`: the training CLI (`workbench.training.cli`), kept at this name."""

from workbench.training.cli import main

if __name__ == "__main__":
    main()

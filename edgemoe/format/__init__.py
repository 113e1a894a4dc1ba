"""The .emoe container as Python writes it, and the parts of it only Python reads."""

"""uringstack: the fast Linux storage path for Python."""

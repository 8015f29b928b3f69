"""Storage: the SQLite store and the repo manager over it."""

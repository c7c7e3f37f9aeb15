"""Model families; one folder per model, the torch modules apart from their training wrappers."""

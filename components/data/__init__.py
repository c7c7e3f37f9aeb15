"""Datasets in the MVTec AD layout: validation, manifests, prepared arrays and the bundled default set."""

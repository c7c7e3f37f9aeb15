"""OE-SDN: networks, losses, outlier exposure, objectives, the deployable detector and its files."""

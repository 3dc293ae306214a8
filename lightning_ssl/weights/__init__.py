"""Sample and view weights (KDE density, UOTA)."""

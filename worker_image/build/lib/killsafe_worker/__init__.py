"""killsafe reference worker and web app."""

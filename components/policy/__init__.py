"""Policy pack (placeholder)."""

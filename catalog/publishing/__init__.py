"""Publishing: uploads become checked, immutable, runnable listing versions."""

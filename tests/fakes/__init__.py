"""Stand-ins for external systems that tests drive over real protocols."""

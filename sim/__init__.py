"""Vehicle simulator: physics, driver personas, scenarios and faults over the project DBCs."""

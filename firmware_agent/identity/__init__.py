"""Who is driving: explicit identity signals and the behavioural model."""

"""Collection campaigns: which signals, when (periodic, on change, on a condition) and bounded buffers."""

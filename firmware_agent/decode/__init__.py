"""DBC catalog, compiled and vectorised decoders, capture readers."""

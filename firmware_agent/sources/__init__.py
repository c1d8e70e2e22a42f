"""Where frames come from: python-can buses, capture replay, the in-process simulator."""

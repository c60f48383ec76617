"""The browser viewer (``m3 view``): the last stage of the data flow, reading a memory through
query/ (and, for the grasp preview only, m3_grasp)."""

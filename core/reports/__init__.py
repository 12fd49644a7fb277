"""Reports: the weekly performance report and the registry of written reports."""

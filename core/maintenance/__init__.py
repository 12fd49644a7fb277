"""Infrastructure monitoring, database maintenance and monitoring eventops itself (issue 7)."""

"""Tables, the engine and session scope, and the config schema."""

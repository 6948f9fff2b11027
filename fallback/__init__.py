"""CPU replication engine: C memcpy threads behind the engine interface."""

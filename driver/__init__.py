"""Driver for the ring-mirror IP: PYNQ board transport and simulator transport."""

"""Key material: format, digest and hashing. Pure functions and a CPU pool; no I/O."""

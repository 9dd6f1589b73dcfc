"""File input and output: volumes, landmarks, transforms. Method code never does file I/O."""

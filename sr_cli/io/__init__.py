"""Image, stdin/stdout and video I/O."""

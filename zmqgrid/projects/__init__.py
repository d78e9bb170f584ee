"""Projects: a folder of code and data pushed to the master once and run by every worker (docs/architecture.md,
Projects). This package holds what every side shares: the wire messages, the archive's form and its checks."""

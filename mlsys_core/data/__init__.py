"""Sources, the versioned lake, the data contract and cleaning with quarantine."""

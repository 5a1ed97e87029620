"""Domain adaptation (phase 02a's target domain, phase 02b's methods and their validation)."""

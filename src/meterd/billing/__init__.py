"""Plans, products and what metered usage costs: pure rules, no I/O."""

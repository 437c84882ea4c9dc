"""Who may ask the hub: API keys, their limits, and what an Ask must be able to pay."""

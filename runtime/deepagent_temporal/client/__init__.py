"""Client: ``TemporalDeepAgent`` and the delivery of tokens from both paths."""

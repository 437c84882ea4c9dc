"""The training plane: per-domain federated rounds on Flower (the plan and its app bundle, the
round loop and its screening and aggregation, the global models, the supervised SuperLink, and
`slm-hub train`'s submission and following of a run)."""

"""Resource kinds shared by several steps (secrets, IAM bindings)."""

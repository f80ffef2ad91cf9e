"""Online inference: the served model, rollout between aliases, and the prediction log."""

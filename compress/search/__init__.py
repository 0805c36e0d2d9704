"""Many runs: the search over a space of pipeline configs for the fastest (or smallest) model that
meets a budget on the validation split (an Optuna study)."""

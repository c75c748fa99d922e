"""Baselines that FedPT is compared against; each builder returns a LearningProcess."""

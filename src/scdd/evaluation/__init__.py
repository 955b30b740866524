"""Evaluation of distilled sets: train on the synthetic set, test on real cells."""

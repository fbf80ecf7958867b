"""Safe multi-agent algorithms as RLlib Algorithm/AlgorithmConfig/Learner classes."""
